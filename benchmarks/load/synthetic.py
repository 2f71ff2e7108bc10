"""Synthetic indexes for the index-size sweep: seeded random unit vectors written straight through
`SentenceIndex`, with the repository's fingerprint and dim so `python -m service serve` accepts them.

Embedding a million real sentences would take hours on two cores and measure the encoder again;
the sweep is about FAISS. Every kind of one size gets the very same vectors, ids and order, so the
hits of an approximate kind can be compared id by id with the exact (flat) index: recall@k.
Random vectors have no cluster structure, which makes them a hard case for IVF and HNSW: their
recall here is a lower bound of what real embeddings give.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.index import IndexParams, Sentence, SentenceIndex
from service.repository import load_repository

CHUNK = 50_000
LANGS = ("eng", "deu", "fra", "spa", "cmn", "rus", "ara", "hin")
MARKER = "synthetic.json"


def ivf_nlist_for(n: int) -> int:
    """sqrt(n) clusters (the usual rule), but never more than IVF can train with n points."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def unit_vectors(n: int, dim: int, seed: int, start: int = 0) -> np.ndarray:
    """Rows start..start+n of one seeded stream of random unit vectors (chunking does not change them)."""
    rng = np.random.default_rng([seed, start])
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build_synthetic_index(directory: Path, repo: Path, n: int, params: IndexParams, seed: int = 0) -> dict[str, Any]:
    """Create (or reuse, when its marker matches) an index of `n` synthetic sentences."""
    repository = load_repository(repo)
    wanted = {
        "n": n,
        "seed": seed,
        "chunk": CHUNK,
        "fingerprint": repository.fingerprint,
        "structure": params.structure(),
    }
    marker = directory / MARKER
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")).get("spec") == wanted:
        return dict(json.loads(marker.read_text(encoding="utf-8")))
    if directory.exists():
        shutil.rmtree(directory)
    dim = repository.ensemble.dim
    index = SentenceIndex.open(directory, dim=dim, fingerprint=repository.fingerprint, params=params)
    try:
        started = time.perf_counter()
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            sentences = [
                Sentence(id=f"syn-{i}", text=f"synthetic sentence {i}", lang=LANGS[i % len(LANGS)])
                for i in range(start, start + count)
            ]
            index.add(sentences, unit_vectors(count, dim, seed, start))
        index.save()
        build_s = time.perf_counter() - started
    finally:
        index.close()
    record = {"spec": wanted, "build_s": round(build_s, 2), "dim": dim}
    marker.write_text(json.dumps(record), encoding="utf-8")
    return record
