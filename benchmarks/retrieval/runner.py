"""Runs the retrieval benchmarks for every system and gathers one JSON-ready results dict.

A "system" is a model repository (base model, single member, ensemble...) under a name. Every system
sees the same sentences, the same folds and the same bootstrap resamples, so differences between
systems are paired comparisons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.retrieval import bucc, tatoeba
from benchmarks.retrieval.metrics import bootstrap_macro_means, percentile_interval
from benchmarks.retrieval.systems import System, SystemEmbedder

TATOEBA_PROTOCOL = (
    "XTREME: per language, xx sentences searched among the (sorted) English side of the same file; "
    "exact cosine nearest neighbour; P@1 in percent; xx->en is the XTREME score"
)
MARGIN_K = 4
N_BOOTSTRAP = 1000


@dataclass
class RunConfig:
    """Everything that decides the numbers, recorded in the results so they can be reproduced."""

    data_dir: Path
    languages: list[tatoeba.Language]
    language_set: str
    tasks: list[str]
    max_sentences: int | None
    cache_dir: Path | None
    cv_folds: int
    seed: int
    threads: int


def pct(x: float) -> float:
    return round(100.0 * x, 2)


async def _tatoeba(
    embedder: SystemEmbedder, pairs: list[tatoeba.TatoebaPair], name: str, seed: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per-language and averaged P@1 of one system, plus its bootstrap replicates for paired gains."""
    per_language: dict[str, dict[str, Any]] = {}
    hits: dict[str, list[np.ndarray]] = {"xx_en": [], "en_xx": []}
    for pair in tqdm(pairs, desc=f"{name} tatoeba", unit="lang"):
        code = pair.language.iso3
        xx = await embedder.embed(pair.xx, desc=f"{code} xx")
        en = await embedder.embed(pair.en, desc=f"{code} en")
        xx_en, en_xx = tatoeba.evaluate(xx, en, pair.gold)
        hits["xx_en"].append(xx_en)
        hits["en_xx"].append(en_xx)
        per_language[code] = {
            "code": pair.language.code,
            "n": len(pair.xx),
            "xx_en": pct(xx_en.mean()),
            "en_xx": pct(en_xx.mean()),
        }
    replicates = {d: bootstrap_macro_means(h, N_BOOTSTRAP, seed) for d, h in hits.items()}
    average: dict[str, Any] = {}
    for direction, h in hits.items():
        average[direction] = pct(float(np.mean([x.mean() for x in h])))
        lo, hi = percentile_interval(replicates[direction])
        average[f"{direction}_ci95"] = [pct(lo), pct(hi)]
    return {"per_language": per_language, "average": average}, replicates


async def _bucc(embedder: SystemEmbedder, corpus: bucc.BuccCorpus, cfg: RunConfig) -> dict[str, Any]:
    """Mining F1 with ratio margin and with plain cosine, each with CV and oracle thresholds."""
    x = await embedder.embed(corpus.src.unique_texts, desc="bucc zh")
    y = await embedder.embed(corpus.tgt.unique_texts, desc="bucc en")
    out: dict[str, Any] = {}
    for scoring in bucc.SCORINGS:
        mined = bucc.mine(x, y, scoring, k=MARGIN_K)
        pairs, scores = bucc.candidates_by_id(corpus, mined)
        scored = bucc.score_mining(corpus, pairs, scores, cfg.cv_folds, cfg.seed)
        for part in ("cv", "oracle"):
            for key in ("precision", "recall", "f1"):
                scored[part][key] = pct(scored[part][key])
        out[scoring] = scored
    return out


def _gains(
    tatoeba_results: dict[str, Any], replicates: dict[str, dict[str, np.ndarray]], baseline: str
) -> dict[str, Any]:
    """Average and per-language gain of each system over the baseline, with paired bootstrap intervals."""
    base = tatoeba_results[baseline]
    gains: dict[str, Any] = {}
    for name, result in tatoeba_results.items():
        if name == baseline:
            continue
        entry: dict[str, Any] = {"baseline": baseline, "per_language": {}}
        for direction in ("xx_en", "en_xx"):
            entry[direction] = round(result["average"][direction] - base["average"][direction], 2)
            lo, hi = percentile_interval(replicates[name][direction] - replicates[baseline][direction])
            entry[f"{direction}_ci95"] = [pct(lo), pct(hi)]
        for code, scores in result["per_language"].items():
            entry["per_language"][code] = {
                d: round(scores[d] - base["per_language"][code][d], 2) for d in ("xx_en", "en_xx")
            }
        gains[name] = entry
    return gains


async def run_benchmarks(systems: list[System], cfg: RunConfig, baseline: str) -> dict[str, Any]:
    """Benchmark every system on the configured tasks; the dict is what `report` writes."""
    started = time.perf_counter()
    pairs = [tatoeba.load_pair(cfg.data_dir, lang, cfg.max_sentences) for lang in cfg.languages]
    corpus: bucc.BuccCorpus | None = None
    if "bucc" in cfg.tasks:
        corpus = bucc.load_bucc(cfg.data_dir)
        if cfg.max_sentences is not None:
            corpus = bucc.cap_corpus(corpus, cfg.max_sentences)
    system_info: dict[str, Any] = {}
    tatoeba_results: dict[str, Any] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    bucc_results: dict[str, Any] = {}
    for system in systems:
        t0 = time.perf_counter()
        async with SystemEmbedder(system, cfg.cache_dir, cfg.threads) as embedder:
            if "tatoeba" in cfg.tasks:
                tatoeba_results[system.name], replicates[system.name] = await _tatoeba(
                    embedder, pairs, system.name, cfg.seed
                )
            if corpus is not None:
                bucc_results[system.name] = await _bucc(embedder, corpus, cfg)
            system_info[system.name] = {
                "repo": str(system.repo),
                "fingerprint": embedder.fingerprint,
                "members": embedder.names,
                "member_fingerprints": [m.fingerprint for m in embedder.members],
                "base_models": sorted({s.spec.base_model for m in embedder.members for s in m.repository.members}),
                "fusion": embedder.method,
                "weights": embedder.weights,
                "dim": embedder.dim,
                "texts_embedded": embedder.texts_embedded,
                "texts_from_cache": embedder.texts_from_cache,
                "embed_seconds": round(embedder.embed_seconds, 2),
                "wall_s": round(time.perf_counter() - t0, 2),
            }
    results: dict[str, Any] = {
        "benchmark": "retrieval",
        "units": "P@1 and F1 in percent; thresholds in score units",
        "baseline": baseline,
        "config": {
            "data_dir": str(cfg.data_dir),
            "tasks": cfg.tasks,
            "language_set": cfg.language_set,
            "max_sentences": cfg.max_sentences,
            "cv_folds": cfg.cv_folds,
            "seed": cfg.seed,
            "bootstrap_replicates": N_BOOTSTRAP,
            "margin_k": MARGIN_K,
        },
        "systems": system_info,
    }
    if "tatoeba" in cfg.tasks:
        results["tatoeba"] = {
            "protocol": TATOEBA_PROTOCOL,
            "language_set": cfg.language_set,
            "languages": [
                {"iso3": p.language.iso3, "code": p.language.code, "n_pairs": p.language.n_pairs, "n_used": len(p.xx)}
                for p in pairs
            ],
            "results": tatoeba_results,
            "gains": _gains(tatoeba_results, replicates, baseline),
        }
    if corpus is not None:
        results["bucc"] = {
            "split": bucc.SPLIT_LABEL,
            "pair": "zh-en",
            "mining": f"LASER retrieval 'max', k={MARGIN_K} neighbours both directions, exact cosine search",
            "n_src": len(corpus.src.ids),
            "n_tgt": len(corpus.tgt.ids),
            "n_gold": len(corpus.gold),
            "results": bucc_results,
        }
    results["wall_s"] = round(time.perf_counter() - started, 2)
    return results
