"""`query_lang` (language-centred search) over real REST and gRPC on the tiny repository: the hits and scores
are the centred cosines computed by hand from the service's own embeddings; impossible requests are named."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import numpy as np
import pytest

from service.centering import center, center_by_own_mean
from service.grpc.stubs import xret_pb2, xret_pb2_grpc

if TYPE_CHECKING:  # tests/integration is not a package; only mypy needs the type
    from tests.integration.conftest import RunningService

WORDS = ["cat", "rain", "station", "soup", "mountain", "letter", "garden", "music", "bridge", "coffee"]
ENGLISH = [f"The {a} and the {b} are here." for a in WORDS for b in WORDS[:6]]  # 60 sentences
GERMAN = [
    f"Der {a} und der {b} sind hier, Nummer {i}."
    for i, (a, b) in enumerate(zip(WORDS * 6, WORDS[::-1] * 6, strict=True))
]
QUERIES = GERMAN[:3]


def index_both(http: httpx.Client) -> None:
    sentences = [{"id": f"en{i}", "text": t, "lang": "en"} for i, t in enumerate(ENGLISH)]
    sentences += [{"id": f"de{i}", "text": t, "lang": "de"} for i, t in enumerate(GERMAN)]
    assert http.post("/sentences", json={"sentences": sentences}).status_code == 201


def embed(http: httpx.Client, texts: list[str]) -> np.ndarray:
    reply = http.post("/embed", json={"texts": texts})
    assert reply.status_code == 200, reply.text
    return np.asarray(reply.json()["embeddings"], dtype=np.float64)


def expected_hits(http: httpx.Client, k: int) -> tuple[list[list[str]], np.ndarray]:
    """Top-k English ids and scores of each query, centred by hand: queries on the German mean, English rows
    on their own mean."""
    german, english = embed(http, GERMAN), embed(http, ENGLISH)
    queries = center(embed(http, QUERIES), german.mean(axis=0))
    scores = queries @ center_by_own_mean(english).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[f"en{j}" for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


def test_rest_and_grpc_centred_search_scores_centred_cosines(live: RunningService) -> None:
    with httpx.Client(base_url=live.rest, timeout=60) as http:
        index_both(http)
        ids, scores = expected_hits(http, 5)
        reply = http.post("/search", json={"queries": QUERIES, "k": 5, "langs": ["en"], "query_lang": "de"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["query_lang"] == "de" and body["rescore"] == "none"
        assert [[h["id"] for h in r["hits"]] for r in body["results"]] == ids
        np.testing.assert_allclose([[h["score"] for h in r["hits"]] for r in body["results"]], scores, atol=1e-4)
        plain = http.post("/search", json={"queries": QUERIES, "k": 5, "langs": ["en"]}).json()
        assert plain["query_lang"] is None
        assert [[h["score"] for h in r["hits"]] for r in plain["results"]] != [
            [h["score"] for h in r["hits"]] for r in body["results"]
        ]  # the result cache keys on query_lang
    with grpc.insecure_channel(live.grpc) as channel:
        stub = xret_pb2_grpc.RetrievalStub(channel)
        answer = stub.Search(xret_pb2.SearchRequest(queries=QUERIES, k=5, langs=["en"], query_lang="de"), timeout=60)
        assert answer.query_lang == "de"
        assert [[h.id for h in r.hits] for r in answer.results] == ids
        np.testing.assert_allclose([[h.score for h in r.hits] for r in answer.results], scores, atol=1e-4)
        assert stub.Search(xret_pb2.SearchRequest(queries=QUERIES, k=5), timeout=60).query_lang == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query_lang": "fr"}, "query_lang: centring on 'fr' needs at least 50 indexed sentences"),
        ({"query_lang": "German"}, "query_lang: 'German' is not a language code"),
        ({"query_lang": "de", "fusion": {"method": "rrf"}}, "a language-centred search needs cosine scores"),
        ({"query_lang": "de", "fusion": {"weights": [1, 0]}}, r"weights \[1.0, 0.0\]; drop the fusion override"),
    ],
)
def test_impossible_centred_searches_are_named_over_rest_and_grpc(
    live: RunningService, fields: dict[str, Any], message: str
) -> None:
    with httpx.Client(base_url=live.rest, timeout=60) as http:
        index_both(http)
        reply = http.post("/search", json={"queries": QUERIES, "k": 3, **fields})
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["type"] == "invalid_input"
        assert re.search(message, reply.json()["error"]["message"])
    grpc_fields = dict(fields)
    if "fusion" in grpc_fields:
        grpc_fields["fusion"] = xret_pb2.FusionOverride(**grpc_fields["fusion"])
    with grpc.insecure_channel(live.grpc) as channel, pytest.raises(grpc.RpcError) as caught:
        xret_pb2_grpc.RetrievalStub(channel).Search(
            xret_pb2.SearchRequest(queries=QUERIES, k=3, **grpc_fields), timeout=60
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, caught.value.details())


def test_centring_and_rescoring_do_not_combine(
    service_factory: Callable[..., AbstractContextManager[RunningService]],
) -> None:
    with service_factory(search_rescore="margin") as svc, httpx.Client(base_url=svc.rest, timeout=60) as http:
        index_both(http)
        body = {"queries": QUERIES, "k": 3, "query_lang": "de"}
        refused = http.post("/search", json={**body, "rescore": "csls"})
        assert refused.status_code == 422
        assert "rescore: 'csls' does not combine with query_lang" in refused.json()["error"]["message"]
        stepped_aside = http.post("/search", json=body)  # the server default gives way, and says so
        assert stepped_aside.status_code == 200 and stepped_aside.json()["rescore"] == "none"
        assert http.post("/search", json={"queries": QUERIES, "k": 3}).json()["rescore"] == "margin"
