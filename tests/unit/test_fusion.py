"""Fusion maths on hand-made vectors whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from service.ensemble import fuse_concat, fuse_mean, l2_normalize, reciprocal_rank_fusion
from service.errors import InvalidInput


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
