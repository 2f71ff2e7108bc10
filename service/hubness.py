"""Search-time hubness reduction: ratio-margin and CSLS rescoring of nearest-neighbour candidates.

Why: in a cross-lingual embedding space some sentences ("hubs") sit close to a great many others and
come out as the nearest neighbour of many unrelated queries. Both methods below discount a candidate by
how crowded its neighbourhood is, and a query by how crowded its own is:

* ratio margin (Artetxe & Schwenk 2019):  score(x, y) = cos(x, y) / ((r_x + r_y) / 2)
* CSLS (Conneau et al. 2018):             score(x, y) = 2 cos(x, y) - r_x - r_y

where r_y is the mean cosine of y to its k nearest neighbours on the other side (the queries' side)
and r_x the mean cosine of the query x to its k nearest neighbours among the targets. For one query
r_x is a constant, so it never changes the query's own ranking under CSLS, and under margin only how
strongly r_y weighs; it matters where scores are compared across queries (thresholds, mining).

What the service can and cannot know: the "other side" of an indexed sentence is every future query,
which is unknown at index time. The service therefore approximates r_y by the mean cosine of y to its
k nearest neighbours *among the indexed sentences* (itself excluded), computed when y is added and
recomputed for every sentence when the index is snapshotted. A hub of a multilingual index is close to
many indexed sentences as well as to many queries, so this keeps the property that matters (hubs get
a large r_y), but it is not the paper's quantity: the benchmark reports both (benchmarks/retrieval).
That stand-in measures crowding within the index's own languages, not across them, and it lowered P@1
(stop 7: -2.2 on the stsb_multi_mt dev set). With a *hubness reference* (`--hubness-reference FILE`, a
fixed sample of sentences in many languages, `python -m export reference`) r_y is instead the mean
cosine of y to its REFERENCE_K nearest reference sentences: the reference stands in for the unknown
queries, and r_y no longer depends on what else is indexed (computed once per added sentence, never
recomputed). REFERENCE_K = 16 was chosen on the dev set (16 >= 4 in most languages: a mixed-language
sample is sparser around y than the real queries of one language, and more neighbours average it better).
r_x comes from the query's own search: the mean of its top-k cosines. Rescoring re-ranks the top
`candidate_count(k)` cosine candidates; a sentence outside them cannot be promoted.

Everything here is numpy on unit vectors (inner product = cosine); FAISS stays in service/index.py.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

RescoreMethod = Literal["none", "margin", "csls"]
RESCORE_METHODS: tuple[str, ...] = ("none", "margin", "csls")
NEIGHBOURHOOD_K = 4  # as LASER / XTREME mine with
REFERENCE_K = 16  # r_y over a hubness reference: chosen on the stsb_multi_mt dev set (module docstring)
CANDIDATES_PER_HIT = 10
MIN_CANDIDATES = 100
DEFAULT_BATCH = 1024
_MIN_DENOMINATOR = 1e-12


def candidate_count(k: int) -> int:
    """How many cosine candidates a rescored search re-ranks for k answers: max(10 k, 100)."""
    return max(CANDIDATES_PER_HIT * k, MIN_CANDIDATES)


def top_k_means(
    queries: np.ndarray, base: np.ndarray, k: int, batch: int = DEFAULT_BATCH, exclude_self: bool = False
) -> np.ndarray:
    """Mean of each query row's k largest cosines with the rows of `base`, exactly, as float64 [n].

    Blocked over both query rows and base rows with a running top-k, so memory stays at about
    batch * (batch + k) floats whatever the sizes. `exclude_self` means query i *is* base row i (the
    same matrix) and that pair is skipped by position, so an exact duplicate elsewhere still counts
    as a neighbour. With fewer than k other rows the mean is over those there are; with none it is 0.
    """
    q = np.asarray(queries, dtype=np.float32)
    b = np.asarray(base, dtype=np.float32)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise ValueError(f"query shape {q.shape} and base shape {b.shape} do not match")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if exclude_self and q.shape[0] != b.shape[0]:
        raise ValueError(f"exclude_self needs the queries to be the base rows, got {q.shape[0]} and {b.shape[0]}")
    out = np.zeros(q.shape[0], dtype=np.float64)
    kk = min(k, b.shape[0] - (1 if exclude_self else 0))
    if kk < 1:
        return out
    for r0 in range(0, q.shape[0], batch):
        rows = q[r0 : r0 + batch]
        best = np.full((rows.shape[0], kk), -np.inf, dtype=np.float32)
        for c0 in range(0, b.shape[0], batch):
            block = rows @ b[c0 : c0 + batch].T
            if exclude_self:
                # query r0 + i is base row r0 + i, i.e. column r0 + i - c0 of this block
                own = np.arange(max(r0, c0), min(r0 + rows.shape[0], c0 + block.shape[1]))
                block[own - r0, own - c0] = -np.inf
            merged = np.concatenate([best, block], axis=1)
            best = np.partition(merged, merged.shape[1] - kk, axis=1)[:, -kk:]
        out[r0 : r0 + rows.shape[0]] = best.astype(np.float64).mean(axis=1)
    return out


def neighbourhood_means(vectors: np.ndarray, k: int, batch: int = DEFAULT_BATCH) -> np.ndarray:
    """r of every row: mean cosine to its k nearest *other* rows of the same matrix (exact, batched).

    This is the service's stand-in for r_y (see the module docstring): neighbours among the indexed
    sentences rather than among the unknown queries.
    """
    return top_k_means(vectors, vectors, k, batch, exclude_self=True)


def reference_means(vectors: np.ndarray, reference: np.ndarray, k: int = REFERENCE_K) -> np.ndarray:
    """r_y against a hubness reference: mean cosine of each row to its k nearest reference rows, float32 [n]."""
    return top_k_means(vectors, reference, k).astype(np.float32)


def query_means(topk_scores: np.ndarray, k: int) -> np.ndarray:
    """r_x from a search answer: the mean of the first k of each row's cosines (sorted best first).

    Takes [..., c] scores and returns [...]; a row with fewer than k scores uses those it has.
    """
    scores = np.asarray(topk_scores, dtype=np.float64)
    if scores.ndim < 1 or scores.shape[-1] < 1:
        raise ValueError(f"expected at least one score per query, got shape {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return np.asarray(scores[..., :k].mean(axis=-1))


def rescore(
    candidate_scores: np.ndarray, r_query: np.ndarray | float, r_candidates: np.ndarray, method: str
) -> np.ndarray:
    """Candidate cosines [..., c] rescored by `method` ("none", "margin" or "csls"), as float64.

    `r_query` has one value per query ([...], i.e. the candidate shape without its last axis; a scalar
    for one query) and is broadcast along the candidates; `r_candidates` has one value per candidate.
    Margin's denominator is floored at 1e-12: neighbourhood means of real embeddings are well above 0,
    and the floor only keeps a degenerate all-negative neighbourhood from dividing by zero.
    """
    cos = np.asarray(candidate_scores, dtype=np.float64)
    if method == "none":
        return cos
    r_x = np.expand_dims(np.asarray(r_query, dtype=np.float64), -1)
    r_y = np.asarray(r_candidates, dtype=np.float64)
    if method == "margin":
        return np.asarray(cos / np.maximum((r_x + r_y) / 2.0, _MIN_DENOMINATOR))
    if method == "csls":
        return np.asarray(2.0 * cos - r_x - r_y)
    raise ValueError(f"rescore method {method!r} is not one of {', '.join(RESCORE_METHODS)}")
