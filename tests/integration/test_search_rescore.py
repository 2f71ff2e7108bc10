"""The `rescore` search field over real REST and gRPC on the tiny repository: accepted, reported, validated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from service.grpc.stubs import xret_pb2, xret_pb2_grpc

if TYPE_CHECKING:  # tests/integration is not a package; only mypy needs the type
    from tests.integration.conftest import RunningService

CORPUS = [
    "The cat sleeps on the warm sofa.",
    "Die Katze schläft auf dem warmen Sofa.",
    "Le chat dort sur le canapé chaud.",
    "I am going to the train station tomorrow.",
    "Ich fahre morgen zum Bahnhof.",
    "It is raining in the mountains.",
    "Es regnet in den Bergen.",
    "The soup needs more salt.",
    "Where is the nearest pharmacy?",
    "Wo ist die nächste Apotheke?",
]
QUERIES = ["Die Katze schläft.", "Where is the station?"]


def add_corpus(rest: str) -> None:
    with httpx.Client(base_url=rest, timeout=30) as http:
        sentences = [{"id": f"s{i}", "text": t, "lang": "xx"} for i, t in enumerate(CORPUS)]
        assert http.post("/sentences", json={"sentences": sentences}).status_code == 201


def rest_search(rest: str, **body: Any) -> httpx.Response:
    with httpx.Client(base_url=rest, timeout=30) as http:
        return http.post("/search", json={"queries": QUERIES, "k": 4, **body})


def grpc_search(target: str, **fields: Any) -> xret_pb2.SearchResponse:
    with grpc.insecure_channel(target) as channel:
        reply: xret_pb2.SearchResponse = xret_pb2_grpc.RetrievalStub(channel).Search(
            xret_pb2.SearchRequest(queries=QUERIES, k=4, **fields), timeout=30
        )
        return reply


@pytest.fixture
def stats(service_factory: Callable[..., AbstractContextManager[RunningService]]) -> Iterator[RunningService]:
    """A service that keeps the neighbourhood statistics rescoring needs (off by default)."""
    with service_factory(neighbourhood_stats=True) as svc:
        yield svc


def test_a_default_server_refuses_rescoring_and_names_the_flag(live: RunningService) -> None:
    add_corpus(live.rest)
    r = rest_search(live.rest, rescore="margin")
    assert r.status_code == 422 and "--neighbourhood-stats" in r.json()["error"]["message"]
    assert rest_search(live.rest, rescore="none").status_code == 200


def test_rest_and_grpc_accept_rescore_and_agree(stats: RunningService) -> None:
    add_corpus(stats.rest)
    plain = rest_search(stats.rest)
    assert plain.status_code == 200 and plain.json()["rescore"] == "none"
    for method in ("margin", "csls"):
        r = rest_search(stats.rest, rescore=method)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rescore"] == method
        assert all(len(result["hits"]) == 4 for result in body["results"])
        scores = [h["score"] for h in body["results"][0]["hits"]]
        assert scores == sorted(scores, reverse=True)
        reply = grpc_search(stats.grpc, rescore=method)
        assert reply.rescore == method
        assert [[h.id for h in res.hits] for res in reply.results] == [
            [h["id"] for h in res["hits"]] for res in body["results"]
        ]
        assert [h.score for h in reply.results[0].hits] == pytest.approx(scores, abs=1e-5)
    # CSLS scores are 2 cos - r_x - r_y: not cosines (the rescored scores really come back)
    csls = rest_search(stats.rest, rescore="csls").json()["results"][0]["hits"][0]["score"]
    assert csls != pytest.approx(plain.json()["results"][0]["hits"][0]["score"], abs=1e-6)
    assert grpc_search(stats.grpc).rescore == "none"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rescore": "cosine"}, "rescore: Input should be 'none', 'margin' or 'csls'"),
        ({"rescore": ""}, "rescore: Input should be 'none', 'margin' or 'csls'"),
        ({"rescore": "margin", "fusion": {"method": "rrf"}}, "rescore: 'margin' needs cosine scores"),
        ({"rescore": "csls", "fusion": {"weights": [1, 0]}}, "fusion 'concat' with weights [1.0, 0.0]"),
    ],
)
def test_bad_rescore_is_422_naming_the_problem(stats: RunningService, body: dict[str, Any], message: str) -> None:
    r = rest_search(stats.rest, **body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_input"
    assert message in r.json()["error"]["message"]


def test_bad_rescore_is_invalid_argument_over_grpc(stats: RunningService) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rescore": "cosine"}, "rescore: 'cosine' is not one of none, margin, csls"),
        ({"rescore": "margin", "fusion": xret_pb2.FusionOverride(method="rrf")}, "rescore: 'margin' needs cosine"),
    ]
    for fields, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            grpc_search(stats.grpc, **fields)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert message in (info.value.details() or "")


def test_server_default_applies_when_the_request_says_nothing(
    service_factory: Callable[..., AbstractContextManager[RunningService]],
) -> None:
    with service_factory(search_rescore="csls") as svc:
        add_corpus(svc.rest)
        assert rest_search(svc.rest).json()["rescore"] == "csls"
        assert rest_search(svc.rest, rescore="none").json()["rescore"] == "none"
        assert grpc_search(svc.grpc).rescore == "csls"
        # an rrf override cannot be rescored: the default steps aside and the answer says so
        rrf = rest_search(svc.rest, fusion={"method": "rrf"})
        assert rrf.status_code == 200 and rrf.json()["rescore"] == "none"
