"""A deterministic fake encoder, for tests of batching, ensemble and engine logic without a model.

Vectors are a pure function of (encoder name, token ids), so equal texts embed equally, different
texts almost surely differ, and results are identical across processes and runs. Counters of
forward calls let tests see whether a cache or the batcher really avoided model work.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np
import tokenizers
from tokenizers import models, pre_tokenizers, processors

from service.encoders.base import Tokenizer
from service.encoders.token_counts import TokenCounts


def byte_tokenizer(max_length: int = 64, prefix: str = "") -> Tokenizer:
    """A real fast tokenizer built in memory: one id per UTF-8 byte, XLM-R style <s> ... </s>."""
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate([*specials, *sorted(pre_tokenizers.ByteLevel.alphabet())])}
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    sha256 = hashlib.sha256(backend.to_str().encode()).hexdigest()
    return Tokenizer.from_backend(backend, prefix, max_length, sha256)


class FakeEncoder:
    """Hash of (name, ids) seeds a Gaussian that is normalised to a unit vector."""

    def __init__(self, name: str, dim: int, tokenizer: Tokenizer | None = None) -> None:
        self.name = name
        self.dim = dim
        self.tokenizer = tokenizer or byte_tokenizer()
        self.calls = 0  # forward calls
        self.rows = 0  # texts encoded
        self._lock = threading.Lock()  # forward runs in worker threads
        self.tokens = TokenCounts()

    def _vector(self, ids: list[int]) -> np.ndarray:
        digest = hashlib.blake2b(
            self.name.encode() + np.asarray(ids, dtype=np.int64).tobytes(), digest_size=8
        )
        v = np.random.default_rng(int.from_bytes(digest.digest(), "little")).standard_normal(self.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.rows += len(ids)
        real = sum(len(row) for row in ids)
        self.tokens.add(real=real, computed=real)  # row by row: nothing padded
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(row) for row in ids])

    def warmup(self) -> None:
        self.forward(self.tokenizer.encode(["warm-up"]))
        self.tokens.reset()

    def describe(self) -> dict[str, Any]:
        return {"backend": "fake", "provider": "none", "max_length": self.tokenizer.max_length}
