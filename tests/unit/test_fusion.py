"""Fusion maths on hand-made or random vectors whose answers are known (and read back from a real index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.ensemble import fuse_concat, fuse_mean, l2_normalize, normalized_weights, reciprocal_rank_fusion
from service.errors import InvalidInput, NotFound
from service.fusion import (
    Fusion,
    FusionOverride,
    member_blocks,
    resolve_fusion,
    reweighted_queries,
    rrf_rerank,
)
from service.index import IndexParams, Sentence, SentenceIndex


def unit(*v: float) -> np.ndarray:
    a = np.asarray([v], dtype=np.float32)
    return a / np.linalg.norm(a)


def test_concat_inner_product_is_weighted_mean_of_member_cosines() -> None:
    rng = np.random.default_rng(0)
    q = [rng.normal(size=(1, 8)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32)]
    d = [rng.normal(size=(1, 8)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32)]
    weights = [3.0, 1.0]
    fq, fd = fuse_concat(q, weights), fuse_concat(d, weights)
    cos = [float((l2_normalize(a) @ l2_normalize(b).T)[0, 0]) for a, b in zip(q, d, strict=True)]
    assert fq.shape == (1, 12)
    assert np.isclose(np.linalg.norm(fq), 1.0, atol=1e-6)
    assert np.isclose(float((fq @ fd.T)[0, 0]), 0.75 * cos[0] + 0.25 * cos[1], atol=1e-6)


def test_concat_with_zero_weight_ignores_that_member() -> None:
    a, b = unit(1, 0), unit(0, 1)
    fused = fuse_concat([a, b], [1.0, 0.0])
    assert np.allclose(fused, [[1, 0, 0, 0]], atol=1e-7)


def test_mean_fusion_is_normalised_weighted_average() -> None:
    fused = fuse_mean([unit(1, 0), unit(0, 1)], [1.0, 1.0])
    assert np.allclose(fused, unit(1, 1), atol=1e-6)


def test_mean_fusion_rejects_mixed_dims() -> None:
    with pytest.raises(InvalidInput, match="one dim"):
        fuse_mean([unit(1, 0), unit(1, 0, 0)], [1.0, 1.0])


def test_bad_weights_are_named() -> None:
    with pytest.raises(InvalidInput, match="non-negative"):
        fuse_concat([unit(1, 0)], [-1.0])
    with pytest.raises(InvalidInput, match="2 member outputs for 1 weights"):
        fuse_concat([unit(1, 0), unit(0, 1)], [1.0])


def test_reciprocal_rank_fusion_matches_hand_computation() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "a"]], k=60)
    scores = dict(fused)
    assert np.isclose(scores["a"], 0.5 / 61 + 0.5 / 62)
    assert np.isclose(scores["c"], 0.5 / 63)
    assert [item for item, _ in fused][-1] == "c"
    # a and b tie exactly (same ranks, swapped): ties break by id so results are deterministic
    assert [item for item, _ in fused][:2] == ["a", "b"]


def test_zero_vector_stays_finite() -> None:
    assert np.all(np.isfinite(l2_normalize(np.zeros((2, 3), dtype=np.float32))))


# ------------------------------------------------------------------- per-request fusion (service/fusion.py)
DIMS = [8, 4, 6]
STORED = [2.0, 1.0, 1.0]


def random_members(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.normal(size=(n, d)).astype(np.float32) for d in DIMS]


def weighted_cosines(q: list[np.ndarray], d: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Brute force: sum_i w_i cos(q_i, d_i) over every (query, doc) pair, weights normalised."""
    w = np.asarray(weights) / sum(weights)
    total = np.zeros((len(q[0]), len(d[0])))
    for wi, a, b in zip(w, q, d, strict=True):
        total += wi * (l2_normalize(a) @ l2_normalize(b).T)
    return total


def test_reweighted_query_scores_equal_brute_force_weighted_member_cosines() -> None:
    rng = np.random.default_rng(1)
    docs, queries = random_members(rng, 200), random_members(rng, 5)
    stored_docs, stored_queries = fuse_concat(docs, STORED), fuse_concat(queries, STORED)
    stored_w = list(normalized_weights(STORED))
    for new in ([1.0, 0.0, 0.0], [0.5, 3.0, 1.0], [0.0, 1.0, 1.0]):
        w_new = list(normalized_weights(new))
        scores = reweighted_queries(stored_queries, DIMS, stored_w, w_new) @ stored_docs.T
        expected = weighted_cosines(queries, docs, new)
        assert np.allclose(scores, expected, atol=1e-5)
        assert (np.argsort(-scores, axis=1)[:, :10] == np.argsort(-expected, axis=1)[:, :10]).all()


def test_flat_index_search_with_reweighted_queries_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    docs, queries = random_members(rng, 300), random_members(rng, 3)
    index = SentenceIndex.open(tmp_path / "idx", dim=sum(DIMS), fingerprint="f", params=IndexParams())
    index.add([Sentence(f"s{i}", f"t{i}", "en") for i in range(300)], fuse_concat(docs, STORED))
    stored_w, new = list(normalized_weights(STORED)), [0.2, 0.0, 0.8]
    hits = index.search(reweighted_queries(fuse_concat(queries, STORED), DIMS, stored_w, new), 10)
    expected = weighted_cosines(queries, docs, new)
    for row, found in zip(expected, hits, strict=True):
        assert [h.id for h in found] == [f"s{i}" for i in np.argsort(-row)[:10]]
        assert np.allclose([h.score for h in found], np.sort(row)[::-1][:10], atol=1e-5)
    index.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_members_are_recovered_from_vectors_read_back_from_the_index(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)
    members = random_members(rng, 20)
    weights = [1.0, 0.0, 3.0]
    index = SentenceIndex.open(tmp_path / kind, dim=sum(DIMS), fingerprint="f", params=IndexParams(kind=kind))  # type: ignore[arg-type]
    index.add([Sentence(f"s{i}", f"t{i}", "en") for i in range(20)], fuse_concat(members, weights))
    index.delete(["s0"])
    order = [7, 2, 19]
    read = index.vectors([f"s{i}" for i in order])
    blocks = member_blocks(read, DIMS, list(normalized_weights(weights)))
    assert blocks[1] is None  # stored at weight 0: zeros, unrecoverable
    for block, member in ((blocks[0], members[0]), (blocks[2], members[2])):
        assert block is not None
        assert np.allclose(block, l2_normalize(member[order]), atol=1e-6)
    assert index.vectors([]).shape == (0, sum(DIMS))
    with pytest.raises(NotFound, match="'s0'"):
        index.vectors(["s1", "s0"])
    index.close()


def test_rrf_rerank_matches_hand_computation() -> None:
    # two members of dim 2 whose cosines to the query are known exactly
    query = fuse_concat([unit(1, 0), unit(0, 1)], [1.0, 1.0])[0]
    cands = fuse_concat(
        [np.vstack([unit(1, 0), unit(1, 1), unit(0, 1)]), np.vstack([unit(1, 0), unit(1, 1), unit(0, 1)])],
        [1.0, 1.0],
    )
    # member A cosines: x=1, y=.707, z=0 -> x, y, z; member B cosines: x=0, y=.707, z=1 -> z, y, x
    ranked = rrf_rerank(query, ["x", "y", "z"], cands, [2, 2], [0.5, 0.5], [0.25, 0.75], rrf_k=60, k=2)
    expected = {"x": 0.25 / 61 + 0.75 / 63, "y": 0.25 / 62 + 0.75 / 62, "z": 0.25 / 63 + 0.75 / 61}
    assert [sid for sid, _ in ranked] == ["z", "y"]
    assert np.allclose([s for _, s in ranked], [expected["z"], expected["y"]])
    # a member of weight 0 does not vote: only member A's order remains
    only_a = rrf_rerank(query, ["x", "y", "z"], cands, [2, 2], [0.5, 0.5], [1.0, 0.0], rrf_k=60, k=3)
    assert only_a == [("x", 1 / 61), ("y", 1 / 62), ("z", 1 / 63)]


NAMES = ["a", "b"]


def test_resolve_fusion_defaults_and_overrides() -> None:
    assert resolve_fusion("concat", [3, 1], NAMES, None) == Fusion("concat", (0.75, 0.25))
    assert resolve_fusion("concat", [3, 1], NAMES, FusionOverride("rrf", None), rrf_k=10) == Fusion(
        "rrf", (0.75, 0.25), 10
    )
    assert resolve_fusion("rrf", [1, 1], NAMES, FusionOverride(None, [1, 3])) == Fusion("rrf", (0.25, 0.75))
    assert resolve_fusion("mean", [1, 1], NAMES, FusionOverride("mean", [2, 2])).method == "mean"


@pytest.mark.parametrize(
    ("method", "override", "message"),
    [
        ("concat", FusionOverride("median"), "fusion.method: 'median' is not one of concat, mean, rrf, score_sum"),
        ("concat", FusionOverride(None, [1.0]), r"fusion.weights: 1 weight\(s\) for 2 members \(a, b\)"),
        ("concat", FusionOverride("rrf", [1.0, -1.0]), "fusion.weights: must be finite, non-negative"),
        ("concat", FusionOverride("rrf", [0.0, 0.0]), "not all zero"),
        ("concat", FusionOverride("rrf", [float("nan"), 1.0]), "finite"),
        ("concat", FusionOverride("mean"), "'mean' cannot be served: this repository stores concatenated"),
        ("mean", FusionOverride("rrf"), "cannot be recovered"),
        ("mean", FusionOverride("mean", [1.0, 3.0]), "cannot be recovered"),
    ],
)
def test_impossible_overrides_are_named(method: str, override: FusionOverride, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        resolve_fusion(method, [1.0, 1.0], NAMES, override)


def test_weights_near_the_float_maximum_normalise_instead_of_overflowing() -> None:
    """1e308 + 1e308 is infinity: dividing by that sum made every weight 0 and every score 0, with a 200."""
    assert resolve_fusion("concat", [1.0, 1.0], NAMES, FusionOverride(None, [1e308, 1e308])).weights == (0.5, 0.5)
    assert resolve_fusion("concat", [1.0, 1.0], NAMES, FusionOverride(None, [1.5e308, 5e307])).weights == (
        pytest.approx(0.75, abs=1e-3),
        pytest.approx(0.25, abs=1e-3),
    )
    assert normalized_weights([5e-324, 5e-324]).tolist() == [0.5, 0.5]  # the smallest subnormal, too
    with pytest.raises(InvalidInput, match="finite"):
        normalized_weights([float("inf"), 1.0])


def test_a_member_stored_at_weight_zero_cannot_be_asked_for() -> None:
    with pytest.raises(InvalidInput, match=r"member\(s\) b have weight 0 in this repository"):
        resolve_fusion("concat", [1.0, 0.0], NAMES, FusionOverride("score_sum", [1.0, 1.0]))
    assert resolve_fusion("concat", [1.0, 0.0], NAMES, FusionOverride("rrf", [2.0, 0.0])).weights == (1.0, 0.0)
