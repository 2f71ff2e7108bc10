"""Embeddings for the benchmarks, produced by the service's own engine, with an on-disk cache.

Going through `service.engine.Engine` (ONNX members, micro-batcher, fusion) rather than a separate
PyTorch path means the benchmark scores exactly the vectors the service would index. The engine is
only started on the first cache miss, so a re-run over cached texts never loads a model.

Cache entries are `<cache_dir>/<key>/<sha256 of the text list>.npy`. For a one-member repository the
key hashes what decides that member's vectors (ONNX and tokenizer sha256, prefix, max length,
normalisation, dim) and not its name, so the same weights exported under two names (`e5-small` in
the base repository, `base` in a pipeline's) share one cache; otherwise it is the repository
fingerprint, which hashes members and fusion. Either way a changed model is never served stale vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType

import numpy as np
from tqdm import tqdm

from service.config import Settings
from service.engine import Engine
from service.repository import Repository, load_repository

CHUNK = 512  # texts per engine.embed call; Settings.max_texts_per_request is raised to match


def text_list_key(texts: list[str]) -> str:
    """sha256 of the ordered text list (JSON-encoded so no separator can collide with a text)."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()


class EngineEmbedder:
    """Async context manager: `async with EngineEmbedder(repo, cache) as e: await e.embed(texts)`."""

    def __init__(self, repo_dir: Path, cache_dir: Path | None, threads: int = 0) -> None:
        self.repo_dir = Path(repo_dir)
        self.cache_dir = cache_dir
        self.threads = threads
        self.repository: Repository = load_repository(self.repo_dir)
        self.texts_embedded = 0
        self.texts_from_cache = 0
        self.embed_seconds = 0.0
        self._engine: Engine | None = None
        self._index_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def fingerprint(self) -> str:
        return self.repository.fingerprint

    @property
    def cache_key(self) -> str:
        """Member content hash for a lone member (name-independent), else the repository fingerprint."""
        if len(self.repository.members) != 1:
            return self.fingerprint
        s = self.repository.members[0].spec
        content = [s.onnx_sha256, s.tokenizer_sha256, s.text_prefix, s.max_length, s.normalize, s.dim]
        return "member-" + hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]

    async def __aenter__(self) -> EngineEmbedder:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._engine is not None:
            await self._engine.stop()
            self._engine = None
        if self._index_dir is not None:
            self._index_dir.cleanup()
            self._index_dir = None

    async def _started_engine(self) -> Engine:
        if self._engine is None:
            self._index_dir = tempfile.TemporaryDirectory(prefix="xret-bench-index-")
            settings = Settings(
                repo=self.repo_dir,
                index=Path(self._index_dir.name),
                redis_url=None,
                cache_size=0,  # the disk cache below is the benchmark's cache
                max_texts_per_request=CHUNK,
                queue_size=4 * CHUNK,
                max_chars_per_text=1_000_000,  # the tokenizer truncates; a benchmark must not refuse a sentence
                snapshot_interval_s=0,
                intra_op_threads=self.threads,
            )
            engine = Engine(settings)
            await engine.start()
            self._engine = engine
        return self._engine

    def _cache_path(self, texts: list[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        return Path(self.cache_dir) / self.cache_key / f"{text_list_key(texts)}.npy"

    async def embed(self, texts: list[str], desc: str = "embed") -> np.ndarray:
        """Fused unit vectors [len(texts), dim], from the cache when this exact list was embedded before."""
        dim = self.repository.ensemble.dim
        path = self._cache_path(texts)
        cached = _load(path) if path is not None else None
        if cached is not None and cached.shape == (len(texts), dim) and cached.dtype == np.float32:
            self.texts_from_cache += len(texts)
            return cached
        engine = await self._started_engine()
        t0 = time.perf_counter()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with less padding
        out = np.empty((len(texts), dim), dtype=np.float32)
        with tqdm(total=len(texts), desc=desc, unit="sent", leave=False) as bar:
            for start in range(0, len(order), CHUNK):
                rows = order[start : start + CHUNK]
                result = await engine.embed([texts[i] for i in rows])
                out[rows] = result.vectors
                bar.update(len(rows))
        self.embed_seconds += time.perf_counter() - t0
        self.texts_embedded += len(texts)
        if path is not None:
            _save_atomic(path, out)
        return out


def _load(path: Path) -> np.ndarray | None:
    """A cached array, or None when absent or unreadable (a damaged entry is recomputed, not trusted)."""
    if not path.is_file():
        return None
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError):
        return None


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write then rename, so an interrupted run never leaves a truncated entry that later loads as valid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
