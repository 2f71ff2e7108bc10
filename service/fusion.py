"""Per-request fusion over the stored fused vectors: re-weighting and reciprocal-rank re-ranking.

The index stores one vector per sentence, fused the repository's way (`ensemble.json`). A search may
ask for another fusion; what can be answered follows from what the stored vector still holds:

* Concat layout (repository method concat, score_sum or rrf: all index the weighted concatenation)
  stores d = [sqrt(w_1) v_1, ..., sqrt(w_n) v_n], v_i the unit vector of member i and w the
  repository weights normalised to sum 1. Block i divided by sqrt(w_i) is v_i again, so every member
  with w_i > 0 can be read back; a member stored at w_i = 0 is zeros and cannot be asked for.
* Mean layout stores normalise(sum_i w_i v_i): members cannot be separated, so only the
  repository's own fusion is served. Conversely a mean query is not comparable with concat vectors.

Re-weighting (concat / score_sum with weights w'), exact. The fused query q = [sqrt(w_i) u_i]
becomes q' with blocks (w'_i / sqrt(w_i)) u_i = (w'_i / w_i) q_i, and for every stored d

    <q', d> = sum_i (w'_i / sqrt(w_i)) sqrt(w_i) <u_i, v_i> = sum_i w'_i cos(u_i, v_i),

the weighted sum of member cosines under the new weights. The inner product is linear in d, so an
exhaustive (flat) search over q' ranks the whole index exactly as brute force would; IVF and HNSW
answer q' as approximately as any other query.

RRF is a re-ranking of candidates, not an exhaustive fusion: candidates are the top max(10 k, 100)
of the summed-cosine search under the same weights (the repository's own search when the weights
are its own); each member ranks them by its own cosine, read back from the stored vectors, and the
rankings are combined by weighted reciprocal-rank fusion. Scores are then RRF scores, not cosines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.ensemble import normalized_weights, reciprocal_rank_fusion
from service.errors import InvalidInput
from service.repository import FUSION_METHODS

RRF_MIN_CANDIDATES = 100
RRF_CANDIDATES_PER_HIT = 10


@dataclass(frozen=True)
class FusionOverride:
    """What a search request asks for; None keeps the repository's method or weights."""

    method: str | None = None
    weights: Sequence[float] | None = None


@dataclass(frozen=True)
class Fusion:
    """The fusion a search actually runs (and responses report): method and weights summing to 1."""

    method: str
    weights: tuple[float, ...]
    rrf_k: int = 60


def stored_layout(repository_method: str) -> str:
    """What the index holds for a repository's fusion: 'mean', or 'concat' for every other method."""
    return "mean" if repository_method == "mean" else "concat"


def rrf_candidates(k: int) -> int:
    """How many summed-cosine hits RRF re-ranks for k answers."""
    return max(k * RRF_CANDIDATES_PER_HIT, RRF_MIN_CANDIDATES)


def _requested_weights(weights: Sequence[float], members: Sequence[str]) -> np.ndarray:
    if len(weights) != len(members):
        raise InvalidInput(
            f"fusion.weights: {len(weights)} weight(s) for {len(members)} members "
            f"({', '.join(members)}); give one per member, in that order"
        )
    try:
        w = np.asarray([float(x) for x in weights], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"fusion.weights: must be numbers, got {list(weights)!r}") from None
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.max() <= 0:
        raise InvalidInput(f"fusion.weights: must be finite, non-negative and not all zero, got {list(weights)}")
    return normalized_weights(w.tolist())


def resolve_fusion(
    repository_method: str,
    repository_weights: Sequence[float],
    members: Sequence[str],
    override: FusionOverride | None,
    rrf_k: int = 60,
) -> Fusion:
    """The fusion to run for a request, or InvalidInput saying why the stored vectors cannot serve it."""
    stored = normalized_weights(repository_weights)
    if override is None:
        return Fusion(repository_method, tuple(stored.tolist()), rrf_k)
    method = repository_method if override.method is None else override.method
    if method not in FUSION_METHODS:
        raise InvalidInput(f"fusion.method: {method!r} is not one of {', '.join(FUSION_METHODS)}")
    weights = stored if override.weights is None else _requested_weights(override.weights, members)
    if stored_layout(repository_method) == "mean":
        if method != "mean" or not np.allclose(weights, stored, atol=1e-6):
            raise InvalidInput(
                f"fusion: this repository stores the weighted mean of member vectors (fusion 'mean', weights "
                f"{stored.round(6).tolist()}), from which single members cannot be recovered; only that "
                f"fusion can be served, not {method!r} with weights {weights.round(6).tolist()}"
            )
    elif method == "mean":
        raise InvalidInput(
            f"fusion.method: 'mean' cannot be served: this repository stores concatenated member vectors "
            f"(fusion {repository_method!r}) and a mean query vector is not comparable with them; use "
            "'concat' or 'score_sum' (weighted sum of member cosines) or 'rrf'"
        )
    else:
        lost = [name for name, w, s in zip(members, weights, stored, strict=True) if w > 0 and s == 0]
        if lost:
            raise InvalidInput(
                f"fusion.weights: member(s) {', '.join(lost)} have weight 0 in this repository, so their "
                "vectors are not stored; give them weight 0"
            )
    return Fusion(method, tuple(weights.tolist()), rrf_k)


def member_blocks(fused: np.ndarray, dims: Sequence[int], stored: Sequence[float]) -> list[np.ndarray | None]:
    """Each member's unit vectors read back from concat-layout rows; None where stored at weight 0."""
    if fused.ndim != 2 or fused.shape[1] != sum(dims):
        raise InvalidInput(f"expected concat-layout vectors of dim {sum(dims)}, got shape {list(fused.shape)}")
    blocks: list[np.ndarray | None] = []
    start = 0
    for dim, w in zip(dims, stored, strict=True):
        block = fused[:, start : start + dim]
        blocks.append((block / np.sqrt(w)).astype(np.float32) if w > 0 else None)
        start += dim
    return blocks


def reweighted_queries(
    fused: np.ndarray, dims: Sequence[int], stored: Sequence[float], weights: Sequence[float]
) -> np.ndarray:
    """Concat-layout queries whose inner product with stored rows is sum_i weights_i cos_i (module doc)."""
    if fused.ndim != 2 or fused.shape[1] != sum(dims):
        raise InvalidInput(f"expected concat-layout vectors of dim {sum(dims)}, got shape {list(fused.shape)}")
    scale = np.empty(sum(dims), dtype=np.float64)
    start = 0
    for i, (dim, s, w) in enumerate(zip(dims, stored, weights, strict=True)):
        if w > 0 and s == 0:
            raise InvalidInput(f"fusion.weights: member {i} is stored at weight 0 and cannot be re-weighted")
        scale[start : start + dim] = w / s if s > 0 else 0.0
        start += dim
    return (fused * scale).astype(np.float32)


def rrf_rerank(
    query: np.ndarray,
    ids: Sequence[str],
    candidates: np.ndarray,
    dims: Sequence[int],
    stored: Sequence[float],
    weights: Sequence[float],
    rrf_k: int,
    k: int,
) -> list[tuple[str, float]]:
    """Top k (id, RRF score) of the candidates, each member ranking them by its own cosine.

    `query` is one concat-layout fused query row, `candidates` the stored rows of `ids`. Members of
    weight 0 are left out; ties within a member's ranking break by id, as RRF's own ties do.
    """
    q_blocks = member_blocks(query.reshape(1, -1), dims, stored)
    d_blocks = member_blocks(candidates.reshape(len(ids), -1), dims, stored)
    rankings: list[list[str]] = []
    used: list[float] = []
    for i, (qb, db, w) in enumerate(zip(q_blocks, d_blocks, weights, strict=True)):
        if w == 0:
            continue
        if qb is None or db is None:
            raise InvalidInput(f"fusion.weights: member {i} is stored at weight 0 and cannot be ranked")
        cosines = (db @ qb[0]).tolist()
        rankings.append([sid for _, sid in sorted(zip((-c for c in cosines), ids, strict=True))])
        used.append(w)
    return reciprocal_rank_fusion(rankings, used, k=rrf_k)[:k]
