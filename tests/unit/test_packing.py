"""Packing texts into rows (service/encoders/packing.py): every text once, rows full, arrays the graph reads."""

from __future__ import annotations

import random

import numpy as np
import pytest

from service.encoders.packing import pack_rows, packed_feed, unpack


def test_every_text_lands_in_exactly_one_row_within_capacity() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 90) for _ in range(300)]
    rows = pack_rows(lengths, 64)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))
    for row in rows:
        total = sum(lengths[i] for i in row)
        assert total <= 64 or len(row) == 1, row  # only a text longer than a row gets one alone
    assert all(len(row) == 1 for row in rows if sum(lengths[i] for i in row) > 64)


def test_rows_are_filled_before_new_ones_open() -> None:
    assert sorted(map(sorted, pack_rows([5, 5, 5, 5], 10))) == [[0, 1], [2, 3]]
    # best fit: 7 goes beside the 3 (room 7), not into the row with room 8
    rows = pack_rows([2, 3, 7, 8], 10)
    assert sorted(map(sorted, rows)) == [[0, 3], [1, 2]]
    rng = random.Random(1)
    lengths = [rng.randint(5, 30) for _ in range(64)]
    rows = pack_rows(lengths, 128)
    # first-fit decreasing stays within 11/9 OPT + 1 rows; OPT >= total / capacity
    assert len(rows) <= 11 / 9 * np.ceil(sum(lengths) / 128) + 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        pack_rows([3], 0)
    assert pack_rows([], 8) == []


def test_feed_numbers_tokens_per_text_and_unpack_restores_order() -> None:
    ids = [[10, 11, 12], [20], [30, 31], [40, 41, 42, 43]]
    rows = [[3, 1], [0, 2]]
    feed = packed_feed(ids, rows, pad_id=1)
    assert feed["input_ids"].tolist() == [[40, 41, 42, 43, 20], [10, 11, 12, 30, 31]]
    assert feed["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert feed["segment_ids"].tolist() == [[1, 1, 1, 1, 2], [1, 1, 1, 2, 2]]
    assert feed["pool"].shape == (2, 2, 5) and feed["pool"].dtype == np.float32
    assert feed["pool"].sum(axis=-1).tolist() == [[4, 1], [3, 2]]
    short = packed_feed(ids, [[1], [0, 2]], pad_id=1)  # a row with fewer tokens is padded with pad_id, segment 0
    assert short["input_ids"][0].tolist() == [20, 1, 1, 1, 1] and short["segment_ids"][0].tolist() == [1, 0, 0, 0, 0]
    assert short["pool"][0, 1].sum() == 0  # the second slot of a one-text row is empty
    out = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)  # [rows, slots, dim]
    vectors = unpack(out, rows, np.full((4, 3), np.nan, dtype=np.float32))
    assert vectors.tolist() == [out[1, 0].tolist(), out[0, 1].tolist(), out[1, 1].tolist(), out[0, 0].tolist()]
