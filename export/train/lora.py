"""LoRA by hand: low-rank adapters on the attention and feed-forward Linear layers, merged before export.

About forty lines instead of a peft dependency, and the merged result is a plain XLMRobertaModel, so the
ONNX exporter, WiSE-FT and soups never see adapters. The adapted layers are the ones named query, key,
value and dense inside `encoder.layer.*` (attention projections, attention output, FFN in and out); the
pooler's `dense` is left alone because retrieval never uses it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LORA_TARGETS = ("query", "key", "value", "dense")


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / rank) * B A x, with W, b frozen; B starts at zero so step 0 equals the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init, as in the LoRA paper
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        """A plain Linear computing the same function (dropout aside)."""
        with torch.no_grad():
            delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
            self.base.weight.add_(delta.to(self.base.weight.dtype))
        return self.base


def add_lora(encoder: nn.Module, rank: int, alpha: float) -> list[str]:
    """Freeze the whole encoder, then wrap every target Linear of its layers; returns the wrapped names."""
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    wrapped: list[str] = []
    for name, module in list(encoder.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if child_name in LORA_TARGETS and isinstance(child, nn.Linear) and full.startswith("encoder.layer."):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(full)
    if not wrapped:
        raise ValueError("no query/key/value/dense Linear layers under encoder.layer: not a BERT-like encoder")
    return wrapped


def merge_lora(encoder: nn.Module) -> int:
    """Fold every adapter into its Linear (in place) and unwrap it; returns how many were merged."""
    merged = 0
    for module in list(encoder.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
                merged += 1
    return merged
