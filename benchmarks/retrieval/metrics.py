"""Scores of the retrieval benchmarks, as pure numpy functions so each can be checked by hand.

* P@1 (Tatoeba): the share of queries whose nearest neighbour is their translation.
* Ratio margin (Artetxe & Schwenk 2019): cosine divided by the mean cosine of both sides to their k
  nearest neighbours. Plain cosine favours "hub" sentences that are close to everything; dividing by
  the neighbourhood density removes that advantage.
* F1 of a mined pair set at a score threshold (BUCC), the oracle threshold (the best one on the gold
  itself: optimistic by construction) and a k-fold cross-validated threshold (chosen on the other
  folds, scored on the held-out one: the honest number when the only labelled data is the sample).
* Bootstrap of the language-macro average, so a one-point difference can be read against its noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def correct_at_1(nearest: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per-query hit (bool) of the top-1 neighbour against the gold target index."""
    nearest = np.asarray(nearest)
    gold = np.asarray(gold)
    if nearest.shape != gold.shape:
        raise ValueError(f"{nearest.shape} predictions for {gold.shape} gold labels")
    return np.asarray(nearest == gold, dtype=bool)


def precision_at_1(nearest: np.ndarray, gold: np.ndarray) -> float:
    """P@1 in [0, 1]; an empty query set has no defined score, so it is refused."""
    hits = correct_at_1(nearest, gold)
    if hits.size == 0:
        raise ValueError("P@1 of an empty query set")
    return float(hits.mean())


def ratio_margin(cos: np.ndarray, src_density: np.ndarray, tgt_density: np.ndarray) -> np.ndarray:
    """cos(x, y) / ((density(x) + density(y)) / 2), density = mean cosine to the k nearest neighbours.

    Arguments broadcast, so a [n, k] block of candidate cosines takes densities of shape [n, 1] and [n, k].
    """
    denom = (np.asarray(src_density, dtype=np.float64) + np.asarray(tgt_density, dtype=np.float64)) / 2.0
    return np.asarray(cos, dtype=np.float64) / np.maximum(denom, 1e-12)


@dataclass
class PRF:
    """Precision, recall and F1 of an extracted pair set; counts kept so folds can be pooled."""

    threshold: float
    n_extracted: int
    n_correct: int
    n_gold: int

    @property
    def precision(self) -> float:
        return self.n_correct / self.n_extracted if self.n_extracted else 0.0

    @property
    def recall(self) -> float:
        return self.n_correct / self.n_gold if self.n_gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "n_extracted": self.n_extracted,
            "n_correct": self.n_correct,
            "n_gold": self.n_gold,
        }


def f1_at_threshold(scores: np.ndarray, correct: np.ndarray, n_gold: int, threshold: float) -> PRF:
    """Extract the candidates scoring strictly above `threshold` and score them against the gold.

    `correct[i]` says whether candidate i is a gold pair; `n_gold` counts all gold pairs, including those
    no candidate found (they cost recall).
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    keep = scores > threshold
    return PRF(float(threshold), int(keep.sum()), int((keep & correct).sum()), int(n_gold))


def oracle_threshold(scores: np.ndarray, correct: np.ndarray, n_gold: int) -> PRF:
    """The threshold that maximises F1 on these very labels (LASER's BuccOptimize, ties handled).

    Candidates are swept from the best score down; equal scores are taken together, because a threshold
    cannot separate them. The threshold returned lies halfway to the next lower score, so
    `f1_at_threshold(..., threshold)` reproduces the F1 reported here.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.size == 0:
        return PRF(0.0, 0, 0, int(n_gold))
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    last_of_group = np.append(s[1:] != s[:-1], True)  # position i ends a run of equal scores
    ends = np.flatnonzero(last_of_group)
    extracted = ends + 1
    hits = np.cumsum(c)[ends]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(hits > 0, 2 * hits / (extracted + n_gold), 0.0)
    best = int(np.argmax(f1))
    if f1[best] <= 0:  # nothing right at any threshold: extract nothing
        return PRF(float(s[0]), 0, 0, int(n_gold))
    end = ends[best]
    below = s[end + 1] if end + 1 < s.size else s[end] - 1.0
    return PRF(float((s[end] + below) / 2.0), int(extracted[best]), int(hits[best]), int(n_gold))


def assign_folds(n_items: int, n_folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per item, balanced (sizes differ by at most one) and shuffled reproducibly."""
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    rng = np.random.default_rng(seed)
    return np.asarray(rng.permutation(np.arange(n_items) % n_folds), dtype=np.int64)


@dataclass
class CrossValidated:
    """Pooled held-out counts over folds, and the threshold each fold was scored with."""

    pooled: PRF
    fold_thresholds: list[float]
    fold_f1: list[float]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.pooled.to_json())
        out.pop("threshold")
        out["mean_threshold"] = float(np.mean(self.fold_thresholds))
        out["fold_thresholds"] = self.fold_thresholds
        out["fold_f1"] = self.fold_f1
        return out


def cross_validated_f1(
    scores: np.ndarray, correct: np.ndarray, candidate_fold: np.ndarray, gold_fold: np.ndarray, n_folds: int
) -> CrossValidated:
    """k-fold threshold selection: each fold is scored at the oracle threshold of the other folds.

    Folds are given per candidate and per gold pair (the caller groups them, e.g. by source sentence,
    so a candidate and its gold pair always share a fold). Held-out counts are pooled over folds
    (micro-average), so small folds do not weigh as much as large ones.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    candidate_fold = np.asarray(candidate_fold)
    gold_fold = np.asarray(gold_fold)
    thresholds: list[float] = []
    fold_f1: list[float] = []
    extracted = hits = 0
    for fold in range(n_folds):
        train, test = candidate_fold != fold, candidate_fold == fold
        chosen = oracle_threshold(scores[train], correct[train], int((gold_fold != fold).sum()))
        held = f1_at_threshold(scores[test], correct[test], int((gold_fold == fold).sum()), chosen.threshold)
        thresholds.append(chosen.threshold)
        fold_f1.append(held.f1)
        extracted += held.n_extracted
        hits += held.n_correct
    pooled = PRF(float(np.mean(thresholds)), extracted, hits, int(gold_fold.size))
    return CrossValidated(pooled=pooled, fold_thresholds=thresholds, fold_f1=fold_f1)


def bootstrap_macro_means(per_language: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the macro average (mean over languages of per-language hit rates).

    Sentences are resampled within each language. The resampling depends only on the seed and the
    language sizes, so two systems bootstrapped with the same seed get the same resamples: their
    replicate differences are a paired bootstrap of the gain.
    """
    rng = np.random.default_rng(seed)
    totals = np.zeros(n_boot, dtype=np.float64)
    for hits in per_language:
        hits = np.asarray(hits, dtype=np.float64)
        idx = rng.integers(0, hits.size, size=(n_boot, hits.size))
        totals += hits[idx].mean(axis=1)
    return totals / max(len(per_language), 1)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap replicates."""
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
    return float(lo), float(hi)
