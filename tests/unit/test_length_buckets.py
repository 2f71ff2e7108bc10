"""Length buckets: a mixed-length batch runs as groups with bounded padding and the same embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.encoders import OnnxEncoder
from service.encoders.onnx import length_buckets
from service.repository import load_repository


def test_one_long_text_among_short_ones_runs_apart() -> None:
    lengths = [5] * 10 + [40]
    groups = length_buckets(lengths, slack=0.25)
    assert groups == [list(range(10)), [10]]
    # padded tokens fall from 11 x 40 = 440 to 10 x 5 + 40 = 90
    assert sum(len(g) * max(lengths[i] for i in g) for g in groups) == 90


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_row_once_and_padding_bounded_beyond_the_minimum_group(seed: int) -> None:
    lengths = [int(x) for x in np.random.default_rng(seed).integers(3, 60, size=97)]
    groups = length_buckets(lengths, slack=0.25, min_rows=8)
    assert sorted(i for g in groups for i in g) == list(range(97))
    for g in groups:
        padded, real = len(g) * max(lengths[i] for i in g), sum(lengths[i] for i in g)
        # rows come in ascending length, so the last row added to a group past min_rows met the bound exactly
        assert len(g) <= 8 or padded <= 1.25 * real
    assert len(length_buckets(lengths, slack=1000.0)) == 1
    assert length_buckets([], slack=0.25) == []


def test_bucketed_forward_equals_one_padded_call(tiny_repo: Path) -> None:
    member = load_repository(tiny_repo).members[0]
    bucketed = OnnxEncoder(member, device="cpu", padding_slack=0.0, bucketing="slack")
    whole = OnnxEncoder(member, device="cpu", bucketing="none", tokenizer=bucketed.tokenizer)
    texts = ["a", "short one", "x " * 60, "a much longer sentence " * 5, "mid length text here"] * 4
    ids = bucketed.tokenizer.encode(texts)
    assert len(length_buckets([len(r) for r in ids], 0.0)) > 1  # the case really splits
    np.testing.assert_allclose(bucketed.forward(ids), whole.forward(ids), atol=1e-5)
    assert bucketed.describe()["padding_slack"] == 0.0
    assert whole.buckets([3, 9, 4]) == [[0, 1, 2]]
