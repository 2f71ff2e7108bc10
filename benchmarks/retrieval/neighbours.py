"""Exact nearest-neighbour search by inner product (FAISS `IndexFlatIP`).

Engine vectors are L2-normalised, so inner product is cosine. Exact search on purpose: the benchmark
measures the embeddings, and an approximate index would mix its own recall errors into the score.
"""

from __future__ import annotations

import faiss
import numpy as np


def knn(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and indices [len(queries), k] of each query's k nearest rows of `base`, best first."""
    if base.ndim != 2 or queries.ndim != 2 or base.shape[1] != queries.shape[1]:
        raise ValueError(f"query shape {queries.shape} and base shape {base.shape} do not match")
    if not 1 <= k <= base.shape[0]:
        raise ValueError(f"k={k} for a base of {base.shape[0]} vectors")
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, ids
