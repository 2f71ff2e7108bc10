"""Fan-out of one batch to every member, and the pure fusion functions that combine members.

Fusion is kept as plain numpy functions so its maths can be tested without models and reused by
benchmarks. The fused vector of `concat` is built so that its inner product is the weighted mean
of member cosines: with unit member vectors e_i and weights w_i summing to 1, the concatenation of
sqrt(w_i) * e_i has unit norm and <q, d> = sum_i w_i cos(q_i, d_i). One FAISS search over the fused
vectors is therefore exactly score-level "summed cosine" fusion, at the cost of one index.

Fusion is chosen per repository (`ensemble.json`) and can be overridden per search request. The
index keeps only the repository's fused vectors, and overrides are served from them
(service/fusion.py holds the maths and its proof):

* concat-layout repositories (concat, score_sum, rrf): each member's unit vector is block i of the
  stored vector divided by sqrt(w_i), so `concat`/`score_sum` with other weights is an exact
  re-weighting (the query's blocks scaled by w'_i / sqrt(w_i)), and `rrf` re-ranks the top
  max(10 k, 100) summed-cosine candidates by per-member cosine rankings. A member stored at weight 0
  cannot be asked for. `mean` is refused: a mean query is not comparable with concat vectors.
* mean repositories: members cannot be recovered from the mean, so only their own fusion is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.encoders.base import Encoder
from service.errors import InvalidInput

EPS = 1e-12


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit vectors; zero rows stay zero instead of turning into NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, EPS)).astype(np.float32, copy=False)


def embed_texts(encoder: Encoder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit vectors from one member in input order, run as length-sorted batches (little padding).

    For offline callers that hold a whole text list (the pipeline's dev selection, the device benchmark);
    the service itself batches through its micro-batcher instead.
    """
    ids = encoder.tokenizer.encode(texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = l2_normalize(encoder.forward([ids[i] for i in rows]))
    return out


def normalized_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights scaled to sum to one, so fused scores stay in the cosine range.

    Scaled by their largest first: weights near the float maximum would otherwise sum to infinity and
    normalise to all zeros, every score 0, with no error.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.max() <= 0:
        raise InvalidInput(f"fusion weights must be finite, non-negative and not all zero, got {list(weights)}")
    w = w / w.max()
    return w / w.sum()


def fuse_concat(member_vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted concatenation of L2-normalised member embeddings (unit norm by construction)."""
    w = normalized_weights(weights)
    if len(member_vectors) != len(w):
        raise InvalidInput(f"{len(member_vectors)} member outputs for {len(w)} weights")
    parts = [np.sqrt(wi) * l2_normalize(v) for wi, v in zip(w, member_vectors, strict=True)]
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def fuse_mean(member_vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of normalised member embeddings, renormalised; needs members of one dim."""
    w = normalized_weights(weights)
    dims = {v.shape[1] for v in member_vectors}
    if len(dims) != 1:
        raise InvalidInput(f"fusion 'mean' needs members of one dim, got {sorted(dims)}")
    acc = sum(wi * l2_normalize(v) for wi, v in zip(w, member_vectors, strict=True))
    return l2_normalize(np.asarray(acc, dtype=np.float32))


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None, k: int = 60
) -> list[tuple[str, float]]:
    """RRF (Cormack et al. 2009): sum of w / (k + rank) over the lists an item appears in."""
    w = normalized_weights(weights if weights is not None else [1.0] * len(rankings))
    scores: dict[str, float] = {}
    for wi, ranking in zip(w, rankings, strict=True):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + float(wi) / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def fuse(method: str, member_vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Embedding-level fusion by name; score-level methods index the weighted concatenation."""
    if method == "mean":
        return fuse_mean(member_vectors, weights)
    # concat, and score_sum / rrf whose per-member scores are read back from the concatenation
    return fuse_concat(member_vectors, weights)


class Ensemble:
    """Runs every member on one batch concurrently and fuses their outputs.

    Members that share a tokenizer receive the same ids, tokenized once by the caller (the
    ids arrive grouped by tokenizer key), which is why `run` takes ids per group.
    """

    def __init__(self, encoders: Sequence[Encoder], method: str, weights: Sequence[float]) -> None:
        self.encoders = list(encoders)
        self.method = method
        self.weights = list(weights)
        self.group_keys: list[str] = []
        for enc in self.encoders:
            if enc.tokenizer.key not in self.group_keys:
                self.group_keys.append(enc.tokenizer.key)
        self.tokenizers = {enc.tokenizer.key: enc.tokenizer for enc in self.encoders}
        self.dims = [enc.dim for enc in self.encoders]
        self.dim = sum(self.dims) if method != "mean" else self.dims[0]
        # One thread per member so members run concurrently; ORT releases the GIL during run().
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.encoders)), thread_name_prefix="member")

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], ...]]:
        """Ids of each text for every tokenizer group, in group order (one item per text)."""
        per_group = [self.tokenizers[key].encode(texts) for key in self.group_keys]
        return [tuple(group[i] for group in per_group) for i in range(len(texts))]

    @staticmethod
    def cost(item: tuple[list[int], ...]) -> int:
        """Padded-token cost of one text: its longest tokenization across groups."""
        return max(len(ids) for ids in item)

    def member_outputs(self, items: list[tuple[list[int], ...]]) -> list[np.ndarray]:
        """Raw (unfused) outputs of every member for one batch, members run concurrently."""
        futures = []
        for enc in self.encoders:
            g = self.group_keys.index(enc.tokenizer.key)
            futures.append(self._pool.submit(enc.forward, [item[g] for item in items]))
        return [f.result() for f in futures]

    def run(self, items: list[tuple[list[int], ...]]) -> list[np.ndarray]:
        """Fused embedding per item; the micro-batcher calls this from a worker thread."""
        fused = fuse(self.method, self.member_outputs(items), self.weights)
        return list(fused)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
