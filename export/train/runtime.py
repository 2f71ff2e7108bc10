"""Where and how tensors run: device choice, bf16 autocast, and seeding, shared by training and evaluation."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from export.train.config import TrainConfigError


@dataclass(frozen=True)
class Runtime:
    """`autocast_dtype` None means plain fp32; bf16 autocast is only chosen where the hardware supports it."""

    device: torch.device
    autocast_dtype: torch.dtype | None

    @classmethod
    def choose(cls, device: str, precision: str) -> Runtime:
        """'auto' picks CUDA when present and bf16 autocast when that GPU supports it.

        CPU stays fp32 under 'auto': bf16 matmuls are only faster on CPUs with AMX/AVX512-BF16 and
        slower than fp32 elsewhere, so it is opt-in there ('bf16').
        """
        if device == "cuda" and not torch.cuda.is_available():
            raise TrainConfigError("device 'cuda' requested but torch sees no CUDA device")
        chosen = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
        if precision == "bf16" or (precision == "auto" and chosen.type == "cuda" and torch.cuda.is_bf16_supported()):
            return cls(chosen, torch.bfloat16)
        return cls(chosen, None)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
            yield

    def describe(self) -> str:
        return f"{self.device.type}/{'bf16' if self.autocast_dtype is not None else 'fp32'}"


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (all devices) RNGs from one seed: dropout and head init repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
