"""Batch by expected run time: the call-cost fit, the optimal split, and a calibrated encoder."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from service.encoders import OnnxEncoder
from service.encoders.call_cost import CallCost, cost_buckets, fit_call_cost
from service.repository import load_repository


def total(groups: list[list[int]], lengths: list[int], cost: CallCost) -> float:
    return sum(cost.seconds(len(g), max(lengths[i] for i in g)) for g in groups)


def brute_force_best(lengths: list[int], cost: CallCost) -> float:
    """Every way to cut the length-sorted rows into contiguous groups."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = float("inf")
    for mask in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for cut, i in zip(mask, order[1:], strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(i)
        groups.append(current)
        best = min(best, total(groups, lengths, cost))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_split_is_optimal_and_covers_every_row_once(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(3, 80, size=9)]
    cost = CallCost(fixed=float(rng.uniform(0, 10)), per_token=1.0, per_attention=float(rng.uniform(0, 0.02)))
    groups = cost_buckets(lengths, cost)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert total(groups, lengths, cost) == pytest.approx(brute_force_best(lengths, cost))


def test_fixed_cost_decides_between_one_call_and_many() -> None:
    lengths = [4, 4, 4, 4, 60]
    # calls are nearly free: the long row goes alone instead of padding four short ones to 60
    assert cost_buckets(lengths, CallCost(fixed=0.1, per_token=1.0)) == [[0, 1, 2, 3], [4]]
    # a call costs more than the padding saved (4 rows x 56 pad tokens): one call
    assert cost_buckets(lengths, CallCost(fixed=1000.0, per_token=1.0)) == [[0, 1, 2, 3, 4]]
    assert cost_buckets([], CallCost(fixed=1.0, per_token=1.0)) == []


def test_fit_recovers_a_known_model_and_never_goes_negative() -> None:
    truth = CallCost(fixed=0.005, per_token=1.6e-4, per_attention=3e-7)
    shapes = [(1, 8), (1, 64), (4, 16), (8, 32), (16, 8), (2, 128)]
    fitted = fit_call_cost([(r, n, truth.seconds(r, n)) for r, n in shapes])
    assert fitted.fixed == pytest.approx(truth.fixed, rel=1e-6)
    assert fitted.per_token == pytest.approx(truth.per_token, rel=1e-6)
    assert fitted.per_attention == pytest.approx(truth.per_attention, rel=1e-4)
    # timings that shrink with size would fit a negative slope: the term is dropped, not made negative
    noisy = fit_call_cost([(1, 8, 0.010), (8, 32, 0.009), (16, 64, 0.008)])
    assert min(noisy.fixed, noisy.per_token, noisy.per_attention) >= 0
    assert noisy.per_token > 0 or noisy.fixed > 0
    with pytest.raises(ValueError, match="at least one"):
        fit_call_cost([])


def test_cost_bucketed_encoder_calibrates_and_embeds_like_one_call(tiny_repo: Path) -> None:
    member = load_repository(tiny_repo).members[0]
    by_cost = OnnxEncoder(member, device="cpu", bucketing="cost")
    whole = OnnxEncoder(member, device="cpu", bucketing="none", tokenizer=by_cost.tokenizer)
    default = by_cost.call_cost
    by_cost.warmup()
    assert by_cost.call_cost != default  # measured on this session, not the built-in guess
    info = by_cost.describe()
    assert info["bucketing"] == "cost" and set(info["call_cost_s"]) == {"fixed", "per_token", "per_attention"}
    texts = ["a", "short one", "x " * 60, "a much longer sentence " * 5, "mid length text here"] * 4
    ids = by_cost.tokenizer.encode(texts)
    np.testing.assert_allclose(by_cost.forward(ids), whole.forward(ids), atol=1e-5)
