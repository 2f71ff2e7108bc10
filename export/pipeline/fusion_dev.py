"""Fusion weights chosen on the retrieval dev set (stsb_multi_mt dev, never Tatoeba or BUCC).

Members are run exactly as the service runs them (their exported ONNX graphs through service.encoders),
then every candidate in the grid (the product of `weight_grid` over members, all-zero excluded, duplicates
after normalisation dropped) is scored by xx->en P@1. The concat fused vector's inner product is the
weighted sum of member cosines (see service.ensemble), so a candidate's scores are sum_i w_i S_i over
per-member similarity matrices computed once; no candidate needs its own embedding pass. Single-member
candidates are in the grid whenever it holds 0, so the chosen ensemble is never worse on dev than its
best member.

Two rules pick the winner. `best` takes the highest dev P@1. `smallest-within-noise` takes, among the
candidates whose P@1 is within 1.96 paired standard errors of the best (the same dev queries, so the
difference's error is that of per-query hit differences, a macro mean over languages), the one with the
fewest members, then the highest P@1: at stop 10 the top eight of 255 candidates lay within 0.003 of each
other, so `best` picked by noise between ensembles of equal merit, and a smaller ensemble is cheaper to
serve. Like every choice in the study, the rule is fixed before the test sets are looked at.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from export.repository_writer import write_ensemble
from service.encoders import load_encoders
from service.encoders.base import Encoder
from service.ensemble import embed_texts
from service.repository import load_repository

MAX_CANDIDATES = 4096
SELECTION_RULES = ("best", "smallest-within-noise")
Z_95 = 1.96
EMBED_BATCH = 64
METRIC = "stsb_multi_mt dev xx->en P@1 (gold strictly above every other English sentence), mean over langs"


class FusionSelectionError(ValueError):
    """The weight grid is unusable (too many candidates for the member count)."""


def candidate_weights(n_members: int, grid: Sequence[float]) -> list[tuple[float, ...]]:
    """Grid product, all-zero removed, one representative per normalised weight vector, in product order."""
    count = len(set(grid)) ** n_members
    if count > MAX_CANDIDATES:
        raise FusionSelectionError(
            f"ensemble.weight_grid {list(grid)} over {n_members} members gives {count} candidates "
            f"(limit {MAX_CANDIDATES}); use a coarser grid such as [0, 1]"
        )
    seen: set[tuple[float, ...]] = set()
    out: list[tuple[float, ...]] = []
    for weights in itertools.product(sorted(set(grid)), repeat=n_members):
        total = sum(weights)
        if total <= 0:
            continue
        key = tuple(round(w / total, 9) for w in weights)
        if key not in seen:
            seen.add(key)
            out.append(tuple(float(w) for w in weights))
    return out


def hits_from_scores(scores: np.ndarray) -> np.ndarray:
    """Per row: is its diagonal (gold) score strictly above every other score in the row."""
    gold = np.diag(scores).copy()
    others = scores.copy()
    np.fill_diagonal(others, -np.inf)
    return np.asarray(gold > others.max(axis=1))


def p1_from_scores(scores: np.ndarray) -> float:
    """Fraction of rows whose diagonal (gold) score is strictly above every other score in the row."""
    return float(np.mean(hits_from_scores(scores)))


def paired_standard_error(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Standard error of macro-mean P@1(a) - P@1(b) over languages, from per-query hits on the same queries."""
    variances = [np.var(a[lang].astype(float) - b[lang].astype(float), ddof=1) / a[lang].size for lang in a]
    return float(np.sqrt(sum(variances)) / len(variances))


def choose(results: list[dict[str, Any]], hits: list[dict[str, np.ndarray]], rule: str) -> tuple[int, int]:
    """Indices of the best and of the chosen candidate under `rule`; annotates each result with its gap and
    error to the best."""
    if rule not in SELECTION_RULES:
        raise FusionSelectionError(f"selection rule {rule!r} not in {SELECTION_RULES}")
    best = max(range(len(results)), key=lambda i: (results[i]["p1"], -i))
    for i, result in enumerate(results):
        se = paired_standard_error(hits[best], hits[i]) if i != best else 0.0
        result["gap_to_best"] = results[best]["p1"] - result["p1"]
        result["se_to_best"] = se
        result["within_noise"] = result["gap_to_best"] <= Z_95 * se
    if rule == "best":
        return best, best
    close = [i for i, result in enumerate(results) if result["within_noise"]]
    return best, min(close, key=lambda i: (sum(w > 0 for w in results[i]["weights"]), -results[i]["p1"], i))


def _embed_members(encoders: list[Encoder], texts: list[str], workers: int) -> list[np.ndarray]:
    """Every member's unit vectors, in member order, `workers` members at a time.

    Each member keeps one intra-op thread (so its numbers do not depend on the machine's core count) and
    onnxruntime releases the GIL while it runs, so members side by side use the cores that one
    single-threaded member would leave idle: this step embeds the dev set once per member (8 in the
    syntactic study) and was most of the pipeline's final run.
    """
    desc = f"dev embeddings ({len(texts)} texts per member, {workers} at a time)"
    with tqdm(total=len(encoders), desc=desc, unit="member") as bar, ThreadPoolExecutor(max_workers=workers) as pool:

        def one(encoder: Encoder) -> np.ndarray:
            vectors = embed_texts(encoder, texts, EMBED_BATCH)
            bar.update(1)
            return vectors

        return list(pool.map(one, encoders))


def select_weights(
    repo: Path,
    members: list[str],
    grid: Sequence[float],
    dev: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    workers: int | None = None,
    rule: str = "best",
) -> dict[str, Any]:
    """Score every candidate; returns selection.json's payload (all candidates, the best and the chosen one).

    `workers` members are embedded at once (default: one per CPU core); the result does not depend on it.
    """
    if rule not in SELECTION_RULES:
        raise FusionSelectionError(f"selection rule {rule!r} not in {SELECTION_RULES}")
    workers = max(1, workers or os.cpu_count() or 1)
    candidates = candidate_weights(len(members), grid)
    write_ensemble(repo, members, method="concat")  # provisional, so the members load as the service loads them
    encoders = load_encoders(load_repository(repo), device="cpu", threads=1)
    texts = sorted({t for src, tgt in dev.values() for t in (*src, *tgt)})
    row = {text: i for i, text in enumerate(texts)}
    similarities: dict[str, list[np.ndarray]] = {lang: [] for lang in dev}
    for vectors in _embed_members(encoders, texts, workers):
        for lang, (src, tgt) in dev.items():
            similarities[lang].append(vectors[[row[t] for t in src]] @ vectors[[row[t] for t in tgt]].T)
    results: list[dict[str, Any]] = []
    hits: list[dict[str, np.ndarray]] = []
    for weights in candidates:
        w = np.asarray(weights) / sum(weights)
        hits.append(
            {
                lang: hits_from_scores(sum(wi * s for wi, s in zip(w, sims, strict=True)))
                for lang, sims in similarities.items()
            }
        )
        by_lang = {lang: float(h.mean()) for lang, h in hits[-1].items()}
        results.append({"weights": list(weights), "p1": float(np.mean(list(by_lang.values()))), "by_lang": by_lang})
    best, chosen = choose(results, hits, rule)
    return {
        "metric": METRIC,
        "members": members,
        "langs": list(dev),
        "pairs_per_lang": {lang: len(src) for lang, (src, _) in dev.items()},
        "weight_grid": list(grid),
        "rule": rule,
        "candidates": results,
        "best": results[best],
        "chosen": results[chosen],
    }
