"""The packed graph: several texts per row, kept apart inside the graph (see service/encoders/packing.py).

Why a second graph contract: on 2 CPU cores a batch of random-length texts is either padded (work spent on
pad tokens) or cut into length buckets (each bucket one more session call, and each call streams all the
weights). Packing removes both costs at once. The graph does the masking so the service only numbers tokens:
a token attends to the tokens of its own text (a block-diagonal additive mask built from `segment_ids`),
positions restart at each text (`position_ids` plus the model's own offset), and `pool` mean-pools each text.
Padding tokens attend to themselves only, so no softmax row is empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.encoders.packing import PACKED_INPUTS, pack_rows, packed_feed, unpack

PARITY_PACK_TOKENS = 48  # small rows at export, so parity sees rows of several texts and texts alone


class PackedPooledEncoder(nn.Module):
    """Packed rows in, one mean-pooled (and optionally L2-normalised) vector per text out: [rows, slots, dim]."""

    def __init__(self, encoder: nn.Module, normalize: bool, position_offset: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize
        self.position_offset = position_offset

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, segment_ids: torch.Tensor, pool: torch.Tensor
    ) -> torch.Tensor:
        steps = torch.arange(segment_ids.shape[1], device=segment_ids.device)
        same_text = (segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)) & (segment_ids.unsqueeze(1) > 0)
        allowed = same_text | (steps.unsqueeze(1) == steps.unsqueeze(0)).unsqueeze(0)
        blocked = torch.finfo(torch.float32).min
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, blocked).unsqueeze(1)
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids + self.position_offset
        ).last_hidden_state
        pooled = torch.matmul(pool, hidden) / pool.sum(dim=-1, keepdim=True).clamp(min=1e-9)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


def unpadded_rows(batches: list[tuple[np.ndarray, np.ndarray]]) -> list[list[int]]:
    """Token ids per text, read back from padded (input_ids, attention_mask) batches."""
    return [row[mask.astype(bool)].tolist() for ids, masks in batches for row, mask in zip(ids, masks, strict=True)]


def example_feed(texts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Two rows of two texts each: torch.export fixes any axis it sees at size 1."""
    if len(texts) < 4:
        raise ValueError("the packed export example needs at least 4 texts")
    feed = packed_feed(texts, [[0, 1], [2, 3]], pad_id)
    return {name: torch.from_numpy(feed[name]) for name in PACKED_INPUTS}


def dynamic_shapes() -> dict[str, dict[int, Any]]:
    rows, length, slots = torch.export.Dim("rows"), torch.export.Dim("length"), torch.export.Dim("slots")
    token_axes = {0: rows, 1: length}
    return {"input_ids": token_axes, "position_ids": token_axes, "segment_ids": token_axes,
            "pool": {0: rows, 1: slots, 2: length}}  # fmt: skip


def packed_parity(onnx_path: Path, texts: list[list[int]], reference: np.ndarray, pad_id: int) -> float:
    """Max abs difference between the packed graph's vectors and the padded reference, text by text."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = pack_rows([len(t) for t in texts], PARITY_PACK_TOKENS)
    (out,) = session.run(["sentence_embedding"], packed_feed(texts, rows, pad_id))
    got = unpack(np.asarray(out), rows, np.empty_like(reference, dtype=np.float32))
    return float(np.abs(got - reference).max())
