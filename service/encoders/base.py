"""The staged encoder interface: tokenize, then forward.

Tokenizing is split from running the model so the ensemble can tokenize a text once per distinct
tokenizer (members that share one share ids) and the micro-batcher can budget batches by token
count before any model runs. Backends (ONNX Runtime, the fake for tests) only implement `forward`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tokenizers

from service.encoders.token_counts import TokenCounts
from service.errors import StartupError

# Spellings of the padding token in the tokenizer families we export (XLM-R / BERT); a tokenizer.json
# saved without a padding section still has one of these in its vocabulary.
PAD_TOKENS = ("<pad>", "[PAD]")


def tokenizer_key(sha256: str, prefix: str, max_length: int) -> str:
    """What decides the ids of a text: the tokenizer file, the text prefix and the truncation length."""
    return f"{sha256}:{max_length}:{hashlib.sha256(prefix.encode()).hexdigest()[:16]}"


class Tokenizer:
    """A member's fast tokenizer configured exactly as at export: prefix, specials, truncation.

    `key` identifies what decides the ids (tokenizer file, prefix, max_length), so members with
    equal keys can be fed the same ids and are tokenized once.
    """

    def __init__(self, path: Path, prefix: str, max_length: int, sha256: str) -> None:
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise StartupError(f"{path}: not a loadable tokenizer.json ({exc})") from None
        self._configure(backend, prefix, max_length, sha256, str(path))

    @classmethod
    def from_backend(
        cls, backend: tokenizers.Tokenizer, prefix: str, max_length: int, sha256: str
    ) -> Tokenizer:
        """Wrap an in-memory tokenizer (the fake backend builds one, no file needed)."""
        self = cls.__new__(cls)
        self._configure(backend, prefix, max_length, sha256, "in-memory tokenizer")
        return self

    def _configure(
        self, backend: tokenizers.Tokenizer, prefix: str, max_length: int, sha256: str, where: str
    ) -> None:
        if max_length < 2:
            raise StartupError(
                f"{where}: max_length must be >= 2 to hold the special tokens, got {max_length}"
            )
        # Truncation counts the specials the post-processor adds, so </s> survives at the end.
        backend.enable_truncation(max_length)
        backend.no_padding()  # forward pads per batch, to the longest text only
        self._backend = backend
        self.prefix = prefix
        self.max_length = max_length
        self.sha256 = sha256
        self.key = tokenizer_key(sha256, prefix, max_length)
        self.pad_id = self._find_pad_id(backend, where)
        if not backend.encode("").ids:
            # Encoders mean-pool over real tokens; an empty row would divide by zero in the graph.
            raise StartupError(
                f"{where}: the tokenizer adds no special tokens, so empty texts have no tokens"
            )

    @staticmethod
    def _find_pad_id(backend: tokenizers.Tokenizer, where: str) -> int:
        """The model's own pad id: XLM-R derives position ids from it, so a guess could shift them."""
        if backend.padding is not None:
            return int(backend.padding["pad_id"])
        for token in PAD_TOKENS:
            token_id = backend.token_to_id(token)
            if token_id is not None:
                return int(token_id)
        raise StartupError(f"{where}: no padding token (tried {', '.join(PAD_TOKENS)})")

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Ids per text: prefix prepended, specials added, truncated to max_length."""
        encodings = self._backend.encode_batch_fast([self.prefix + t for t in texts])
        return [e.ids for e in encodings]


class Encoder(Protocol):
    """One ensemble member: `forward` is called from worker threads, possibly concurrently."""

    name: str
    dim: int
    tokenizer: Tokenizer
    tokens: TokenCounts  # real tokens given vs tokens computed, served work only (see token_counts.py)

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """Embeddings [len(ids), dim] float32 for already-tokenized texts (padded here per batch)."""
        ...

    def warmup(self) -> None:
        """Run once before serving, so the first request does not pay for lazy initialisation."""
        ...

    def describe(self) -> dict[str, Any]:
        """Runtime facts (provider, threads, ...) for /stats and Info."""
        ...
