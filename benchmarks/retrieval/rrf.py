"""P@1 of reciprocal-rank fusion, searched exactly as the service's `rrf` fusion searches.

RRF is not an embedding: the service finds the top `rrf_candidates(k)` sentences by summed member
cosines (the concatenated vectors it stores), lets each member rank those candidates by its own cosine
and combines the rankings by weighted reciprocal rank (service/fusion.py). The study had only scored
fusions that are embeddings (concat, mean); this module scores the fourth method the service offers,
per query through `service.fusion.rrf_rerank` itself, so what is measured is what `POST /search`
returns for a repository whose fusion is rrf.

Sentence ids are the target positions zero-padded, so the id order that breaks RRF ties is the target
order, the order a FAISS top-1 breaks cosine ties in. `strict` needs the gold's RRF score strictly above
every other candidate's (the dev metric), so a tie counts as a miss there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.retrieval.neighbours import knn
from service.ensemble import normalized_weights
from service.fusion import rrf_candidates, rrf_rerank


def hits_rrf(
    src: np.ndarray,
    tgt: np.ndarray,
    gold: np.ndarray,
    dims: Sequence[int],
    weights: Sequence[float],
    rrf_k: int,
    strict: bool = False,
) -> np.ndarray:
    """Per-query hit (bool) of src -> tgt retrieval when the top hit is chosen by the service's RRF.

    `src` and `tgt` are concat-layout fused rows (blocks of `dims`, member i scaled by sqrt(w_i)) for
    `weights`, as the benchmark's SystemEmbedder gives them for an rrf system.
    """
    if src.ndim != 2 or tgt.ndim != 2 or src.shape[1] != tgt.shape[1] or src.shape[1] != sum(dims):
        raise ValueError(f"src {src.shape} and tgt {tgt.shape} are not concat rows of member dims {list(dims)}")
    if gold.shape != (len(src),):
        raise ValueError(f"gold {gold.shape} does not fit {len(src)} queries")
    stored = tuple(normalized_weights(weights).tolist())
    width = len(str(max(len(tgt) - 1, 0)))
    ids = [f"{i:0{width}d}" for i in range(len(tgt))]
    _, candidates = knn(src, tgt, min(rrf_candidates(1), len(tgt)))
    hits = np.zeros(len(src), dtype=bool)
    for q, rows in enumerate(candidates):
        ranked = rrf_rerank(src[q], [ids[j] for j in rows], tgt[rows], dims, stored, stored, rrf_k, len(rows))
        top_id, top_score = ranked[0]
        hit = top_id == ids[gold[q]]
        if strict and hit and len(ranked) > 1:
            hit = ranked[1][1] < top_score
        hits[q] = hit
    return hits
