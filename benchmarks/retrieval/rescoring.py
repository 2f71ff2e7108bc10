"""P@1 after hubness rescoring (ratio margin, CSLS), from vectors already embedded: no new embedding pass.

Three versions, all reported, because they answer different questions:

* `paper` (Tatoeba as XTREME/LASER would margin-score it): r_x is the mean cosine of a query to its k
  nearest targets, r_y the mean cosine of a target to its k nearest *queries*: each side measured against
  the other. Every target is rescored (exhaustive argmax). What the methods can do at best.
* `service` (what `POST /search` with `rescore` does, see service/hubness.py): r_y is the mean cosine of a
  target to its k nearest *other targets* (the index cannot know its future queries), r_x the mean of the
  query's own top-k cosines, and only the top `candidate_count(1)` cosine candidates are re-ranked. What
  turning the service option on would change.
* `reference` (what `POST /search` with `rescore` does when the service runs with `--hubness-reference`):
  as `service`, but r_y is the mean cosine of a target to its REFERENCE_K nearest sentences of a fixed reference
  sample in many languages (export/reference.py), a stand-in for the unknown queries. Scored only when
  the run is given a reference (`--rescore-reference FILE`).

k = 4 (as LASER and XTREME mine) for every r but the reference's r_y (service.hubness.REFERENCE_K).
`strict` decides ties the way a P@1 definition does: False takes the first best target (as a FAISS
top-1 does: Tatoeba), True needs the gold strictly above every other target (the stsb dev metric of
export/tasks/metrics.p_at_1, so a collapsed encoder scores 0, not 100).
"""

from __future__ import annotations

import numpy as np

from benchmarks.retrieval.neighbours import knn
from service.hubness import RESCORE_METHODS, candidate_count, query_means, reference_means, rescore, top_k_means

# variant -> its key in a system's results; paper and service are scored whenever rescoring is asked for,
# reference only when the run has a reference too
RESCORED_KEY = {"paper": "rescored", "service": "rescored_service", "reference": "rescored_reference"}
BLOCK_ROWS = 1024


def hits_paper(
    src: np.ndarray, tgt: np.ndarray, gold: np.ndarray, method: str, k: int, strict: bool = False
) -> np.ndarray:
    """Per-query hit (bool) of src -> tgt retrieval with bidirectional r over the other side."""
    _check(src, tgt, gold, method)
    r_src = top_k_means(src, tgt, k) if method != "none" else np.zeros(len(src))
    r_tgt = top_k_means(tgt, src, k) if method != "none" else np.zeros(len(tgt))
    hits = np.zeros(len(src), dtype=bool)
    for start in range(0, len(src), BLOCK_ROWS):
        rows = np.arange(start, min(start + BLOCK_ROWS, len(src)))
        scores = rescore(src[rows].astype(np.float32) @ tgt.T.astype(np.float32), r_src[rows], r_tgt, method)
        hits[rows] = _best_is_gold(scores, gold[rows], strict)
    return hits


def hits_service(
    src: np.ndarray, tgt: np.ndarray, gold: np.ndarray, method: str, k: int, strict: bool = False
) -> np.ndarray:
    """Per-query hit (bool) of src -> tgt retrieval rescored as the service does it (module docstring)."""
    _check(src, tgt, gold, method)
    r_tgt = top_k_means(tgt, tgt, k, exclude_self=True) if method != "none" else np.zeros(len(tgt))
    return _rerank(src, tgt, gold, r_tgt, method, k, strict)


def hits_reference(
    src: np.ndarray,
    tgt: np.ndarray,
    gold: np.ndarray,
    method: str,
    k: int,
    strict: bool = False,
    *,
    reference: np.ndarray,
) -> np.ndarray:
    """Per-query hit (bool) rescored as the service does with a hubness reference: r_y over `reference`."""
    _check(src, tgt, gold, method)
    if reference.ndim != 2 or reference.shape[1] != tgt.shape[1] or not len(reference):
        raise ValueError(f"reference {reference.shape} does not fit targets {tgt.shape}")
    r_tgt = reference_means(tgt, reference) if method != "none" else np.zeros(len(tgt))  # k: REFERENCE_K
    return _rerank(src, tgt, gold, r_tgt, method, k, strict)


def _rerank(
    src: np.ndarray, tgt: np.ndarray, gold: np.ndarray, r_tgt: np.ndarray, method: str, k: int, strict: bool
) -> np.ndarray:
    """The service's re-ranking: top `candidate_count(1)` cosine candidates, r_x from the query's own top k."""
    cos, ids = knn(src, tgt, min(candidate_count(1), len(tgt)))
    scores = rescore(cos, query_means(cos, k), r_tgt[ids], method)
    in_list = ids == gold[:, None]
    if not strict:
        return np.asarray(ids[np.arange(len(src)), scores.argmax(axis=1)] == gold, dtype=bool)
    gold_score = np.where(in_list, scores, -np.inf).max(axis=1)
    others = np.where(in_list, -np.inf, scores).max(axis=1)
    return np.asarray(in_list.any(axis=1) & (gold_score > others), dtype=bool)


HITS = {"paper": hits_paper, "service": hits_service}


def _best_is_gold(scores: np.ndarray, gold: np.ndarray, strict: bool) -> np.ndarray:
    rows = np.arange(len(gold))
    if not strict:
        return np.asarray(scores.argmax(axis=1) == gold, dtype=bool)
    gold_score = scores[rows, gold].copy()
    scores[rows, gold] = -np.inf
    return np.asarray(gold_score > scores.max(axis=1), dtype=bool)


def _check(src: np.ndarray, tgt: np.ndarray, gold: np.ndarray, method: str) -> None:
    if method not in RESCORE_METHODS:
        raise ValueError(f"rescore method {method!r} is not one of {', '.join(RESCORE_METHODS)}")
    if src.ndim != 2 or tgt.ndim != 2 or src.shape[1] != tgt.shape[1] or gold.shape != (len(src),):
        raise ValueError(f"src {src.shape}, tgt {tgt.shape} and gold {gold.shape} do not fit together")
