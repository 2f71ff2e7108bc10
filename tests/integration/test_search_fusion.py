"""Per-request fusion over real REST and gRPC on the tiny repository (two concat members, equal weights).

Expected answers come from the members themselves, run with onnxruntime through service.encoders,
so the service's read-back of members from stored fused vectors is checked against the real thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import numpy as np
import pytest

from service.encoders import load_encoders
from service.ensemble import l2_normalize, reciprocal_rank_fusion
from service.grpc.stubs import xret_pb2, xret_pb2_grpc
from service.repository import load_repository

if TYPE_CHECKING:  # tests/integration is not a package; only mypy needs the type
    from tests.integration.conftest import RunningService

CORPUS = [
    "The cat sleeps on the warm sofa.",
    "Die Katze schläft auf dem warmen Sofa.",
    "Le chat dort sur le canapé chaud.",
    "I am going to the train station tomorrow.",
    "Ich fahre morgen zum Bahnhof.",
    "Je vais à la gare demain.",
    "It is raining in the mountains.",
    "Es regnet in den Bergen.",
    "The soup needs more salt.",
    "Die Suppe braucht mehr Salz.",
    "My brother plays the violin every evening.",
    "Mon frère joue du violon chaque soir.",
    "Where is the nearest pharmacy?",
    "Wo ist die nächste Apotheke?",
    "We bought three red apples at the market.",
    "Nous avons acheté trois pommes rouges au marché.",
]
QUERIES = ["Die Katze schläft.", "Where is the station?", "Il pleut beaucoup."]


def member_cosines(repo_dir: Path) -> list[np.ndarray]:
    """[query, doc] cosine matrix of each member, computed straight from its model.onnx."""
    repo = load_repository(repo_dir)
    out = []
    for enc in load_encoders(repo, device="cpu", threads=1):
        q = l2_normalize(enc.forward(enc.tokenizer.encode(QUERIES)))
        d = l2_normalize(enc.forward(enc.tokenizer.encode(CORPUS)))
        out.append(q @ d.T)
    return out


def search(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/search", json={"queries": QUERIES, **body})
    assert r.status_code == 200, r.text
    payload: dict[str, Any] = r.json()
    return payload


@pytest.fixture
def indexed(live: RunningService) -> RunningService:
    with httpx.Client(base_url=live.rest, timeout=30) as http:
        sentences = [{"id": f"s{i}", "text": t, "lang": "xx"} for i, t in enumerate(CORPUS)]
        r = http.post("/sentences", json={"sentences": sentences})
        assert r.status_code == 201, r.text
    return live


def test_score_sum_with_weights_1_0_ranks_exactly_like_member_0(indexed: RunningService, tiny_repo: Path) -> None:
    cos0, cos1 = member_cosines(tiny_repo)
    k = 8
    with httpx.Client(base_url=indexed.rest, timeout=30) as http:
        default = search(http, k=k)  # fills the result cache: the override below must not be served from it
        assert default["fusion"] == {"method": "concat", "weights": [0.5, 0.5]}
        body = search(http, k=k, fusion={"method": "score_sum", "weights": [1, 0]})
    assert body["fusion"] == {"method": "score_sum", "weights": [1.0, 0.0]}
    for qi, result in enumerate(body["results"]):
        got = [(int(h["id"][1:]), h["score"]) for h in result["hits"]]
        # every score is member 0's own cosine, and they are member 0's k best, best first
        assert np.allclose([s for _, s in got], [cos0[qi, i] for i, _ in got], atol=1e-4)
        assert np.allclose([s for _, s in got], np.sort(cos0[qi])[::-1][:k], atol=1e-4)
    blended = [h["score"] for h in default["results"][0]["hits"]]
    expected_blend = np.sort(0.5 * cos0[0] + 0.5 * cos1[0])[::-1][:k]
    assert np.allclose(blended, expected_blend, atol=1e-4)
    assert not np.allclose(blended, np.sort(cos0[0])[::-1][:k], atol=1e-3)  # the override changed the answer


def test_rrf_re_ranks_by_member_rankings_and_reports_it(indexed: RunningService, tiny_repo: Path) -> None:
    cosines = member_cosines(tiny_repo)
    k = 5
    with httpx.Client(base_url=indexed.rest, timeout=30) as http:
        body = search(http, k=k, fusion={"method": "rrf", "weights": [3, 1]})
    assert body["fusion"] == {"method": "rrf", "weights": [0.75, 0.25]}
    for qi, result in enumerate(body["results"]):
        hits = result["hits"]
        assert len(hits) == k
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        # the corpus is smaller than the candidate pool, so the answer is RRF over the whole corpus
        rankings = [[f"s{i}" for i in np.argsort(-c[qi], kind="stable")] for c in cosines]
        expected = reciprocal_rank_fusion(rankings, [3, 1], k=60)[:k]
        assert [h["id"] for h in hits] == [sid for sid, _ in expected]
        assert np.allclose(scores, [s for _, s in expected], atol=1e-9)
    with grpc.insecure_channel(indexed.grpc) as channel:
        stub = xret_pb2_grpc.RetrievalStub(channel)
        request = xret_pb2.SearchRequest(
            queries=QUERIES, k=k, fusion=xret_pb2.FusionOverride(method="rrf", weights=[3, 1])
        )
        reply = stub.Search(request, timeout=30)
    assert reply.fusion.method == "rrf" and list(reply.fusion.weights) == pytest.approx([0.75, 0.25])
    assert [[h.id for h in r.hits] for r in reply.results] == [[h["id"] for h in r["hits"]] for r in body["results"]]


BAD = [
    ({"method": "median"}, "fusion.method"),
    ({"weights": [1.0]}, "fusion.weights: 1 weight(s) for 2 members (tiny0, tiny1)"),
    ({"method": "rrf", "weights": [1.0, -2.0]}, "fusion.weights: must be finite, non-negative"),
    ({"method": "mean"}, "'mean' cannot be served: this repository stores concatenated member vectors"),
    ({"method": "concat", "extra": 1}, "fusion.extra"),
]


@pytest.mark.parametrize(("fusion", "message"), BAD)
def test_bad_overrides_are_422_naming_the_problem(live: RunningService, fusion: dict[str, Any], message: str) -> None:
    with httpx.Client(base_url=live.rest, timeout=30) as http:
        r = http.post("/search", json={"query": "hi", "k": 1, "fusion": fusion})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_input"
    assert message in r.json()["error"]["message"]


def test_bad_overrides_are_invalid_argument_over_grpc(live: RunningService) -> None:
    cases = [
        (xret_pb2.FusionOverride(method="median"), "fusion.method: 'median' is not one of"),
        (xret_pb2.FusionOverride(weights=[1.0]), "fusion.weights: 1 weight(s) for 2 members"),
        (xret_pb2.FusionOverride(method="rrf", weights=[1.0, -2.0]), "non-negative"),
        (xret_pb2.FusionOverride(weights=[0.0, 0.0]), "not all zero"),
        (xret_pb2.FusionOverride(method="mean"), "'mean' cannot be served"),
    ]
    with grpc.insecure_channel(live.grpc) as channel:
        stub = xret_pb2_grpc.RetrievalStub(channel)
        for fusion, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.Search(xret_pb2.SearchRequest(queries=["hi"], k=1, fusion=fusion), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert message in (info.value.details() or "")
