"""Several texts per graph row ("packing"), so a batch of mixed lengths is computed with almost no padding.

A padded batch costs `rows x longest` tokens: random 32-text requests of Tatoeba sentences pad a third or
more of their tokens even when cut into length buckets, and every extra bucket is another session call that
streams all the weights again. A member exported with `--packed` has, beside model.onnx, a packed graph
(model.packed.onnx, the same weights) whose rows each hold several texts one after the other; it keeps them
apart itself (each token attends only to tokens of its own text, position ids restart per text) and
mean-pools each text's tokens, so a packed text's vector is the padded graph's vector for it (parity-checked
at export). This module plans the rows and builds the
arrays; it knows nothing of onnxruntime.

Inputs of a packed graph, all [rows, length] but `pool`:
    input_ids     token ids, `pad_id` after the last text of the row
    position_ids  0, 1, ... within each text (the graph adds its model's offset); 0 on padding
    segment_ids   1, 2, ... = which text of the row a token belongs to; 0 = padding
    pool          float32 [rows, texts per row, length]: 1 where the token belongs to that text
Output `sentence_embedding` float32 [rows, texts per row, dim]; slots past a row's last text are unused.
"""

from __future__ import annotations

import bisect

import numpy as np

PACKED_INPUTS = ("input_ids", "position_ids", "segment_ids", "pool")
# Rows of 32-64 tokens (2-5 Tatoeba sentences) beat 128 in every encoder probe on 2 cores (stop 13: +8-11% over
# padded at 32 and 64, -1 to -7% at 128): a longer row's attention grows with its square and its texts mostly
# attend to nothing. 32 over 64 (stop 14, `scenario packing` within-round ratios to padded serving): 1.10-1.13x
# vs 1.01-1.02x at 4 x 32, alike at 32 x 1. A text longer than a row still runs, in a row of its own.
DEFAULT_PACK_TOKENS = 32


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Text indices grouped into rows of at most `capacity` tokens (first fit, longest text first).

    A text longer than `capacity` gets a row of its own, as long as the text. Longest-first keeps the
    long texts from being stranded at the end, and best fit among rows (the fullest row that still has
    room) keeps rows full, so the call is padded to about `capacity` and no further.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted: the fullest row with room comes first
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        need = lengths[i]
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            room, row = free.pop(at)
            rows[row].append(i)
            if room - need > 0:
                bisect.insort(free, (room - need, row))
            continue
        rows.append([i])
        if capacity - need > 0:
            bisect.insort(free, (capacity - need, len(rows) - 1))
    return rows


def packed_feed(ids: list[list[int]], rows: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    """The four input arrays for `rows` (lists of indices into `ids`), padded to the fullest row."""
    longest = max(sum(len(ids[i]) for i in row) for row in rows)
    slots = max(len(row) for row in rows)
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    position_ids = np.zeros((len(rows), longest), dtype=np.int64)
    segment_ids = np.zeros((len(rows), longest), dtype=np.int64)
    pool = np.zeros((len(rows), slots, longest), dtype=np.float32)
    for r, row in enumerate(rows):
        start = 0
        for slot, i in enumerate(row):
            n = len(ids[i])
            end = start + n
            input_ids[r, start:end] = ids[i]
            position_ids[r, start:end] = np.arange(n)
            segment_ids[r, start:end] = slot + 1
            pool[r, slot, start:end] = 1.0
            start = end
    return {"input_ids": input_ids, "position_ids": position_ids, "segment_ids": segment_ids, "pool": pool}


def unpack(out: np.ndarray, rows: list[list[int]], into: np.ndarray) -> np.ndarray:
    """[rows, slots, dim] graph output written into `into` [texts, dim] at the text indices `rows` hold."""
    for r, row in enumerate(rows):
        into[row] = out[r, : len(row)]
    return into
