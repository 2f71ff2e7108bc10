"""Runs the retrieval benchmarks for every system and gathers one JSON-ready results dict.

A "system" is a model repository (base model, single member, ensemble...) under a name. Every system
sees the same sentences, the same folds and the same bootstrap resamples, so differences between
systems are paired comparisons.

Hubness rescoring (`--rescore margin,csls`) is scored from the vectors each task already embedded, in
two versions (see rescoring.py): "rescored" (r over the other side, as XTREME/LASER) and
"rescored_service" (what the service's `rescore` option does), and with `--rescore-reference FILE`
"rescored_reference" (the service's option with a hubness reference; r_y over the file's sentences,
embedded by each system). Its gain over plain cosine uses the same
bootstrap resamples as the plain score, so the interval is a paired one. Decide on stsb-dev (a dev set),
never on Tatoeba or BUCC (test sets).

A system fused by `rrf` is scored by the service's RRF search (rrf.py) instead of plain cosine; as in the
service, it takes no hubness rescoring, and it has no BUCC score: mining thresholds one score across all
sentence pairs, and RRF scores are ranks within one query's candidates (the results say so by name).

A `~center` system (systems.py) scores every task on language-centred vectors: each one-language side (a
Tatoeba file's xx or English side, the dev set's English or one language, BUCC's zh or en corpus) minus its
own mean, as an index holding those sentences would centre them (service/centering.py).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.retrieval import bucc, stsb_dev, tatoeba
from benchmarks.retrieval.errors import BenchmarkError
from benchmarks.retrieval.families import group_by_family
from benchmarks.retrieval.metrics import bootstrap_macro_means, percentile_interval
from benchmarks.retrieval.rescoring import HITS, RESCORED_KEY, hits_paper, hits_reference
from benchmarks.retrieval.rrf import hits_rrf
from benchmarks.retrieval.systems import System, SystemEmbedder
from service.config import Settings
from service.errors import StartupError
from service.hubness import candidate_count
from service.hubness_reference import read_reference

TATOEBA_PROTOCOL = (
    "XTREME: per language, xx sentences searched among the (sorted) English side of the same file; "
    "exact cosine nearest neighbour; P@1 in percent; xx->en is the XTREME score"
)
MARGIN_K = 4
N_BOOTSTRAP = 1000
Hits = dict[str, list[np.ndarray]]  # direction -> per-language hit arrays


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
    rescore: list[str] = field(default_factory=list)  # margin / csls; plain cosine is always scored
    stsb_languages: list[str] = field(default_factory=lambda: list(stsb_dev.LANGUAGES))
    rescore_reference: Path | None = None  # hubness reference sample (one sentence per line): adds `reference`


def _reference_facts(path: Path | None, texts: list[str] | None) -> dict[str, Any] | None:
    """Which hubness reference the `reference` variant used: file, sentence count and the file's sha256."""
    if path is None or texts is None:
        return None
    return {"path": str(path), "sentences": len(texts), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def pct(x: float) -> float:
    return round(100.0 * x, 2)


def _macro(hits: list[np.ndarray]) -> float:
    """Language-macro average of per-language hit rates (each language weighs the same)."""
    return float(np.mean([h.mean() for h in hits]))


def _averages(hits: Hits, seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Macro-averaged P@1 per direction with bootstrap 95% intervals, and the replicates behind them."""
    replicates = {d: bootstrap_macro_means(h, N_BOOTSTRAP, seed) for d, h in hits.items()}
    average: dict[str, Any] = {}
    for direction, h in hits.items():
        average[direction] = pct(_macro(h))
        lo, hi = percentile_interval(replicates[direction])
        average[f"{direction}_ci95"] = [pct(lo), pct(hi)]
    return average, replicates


def _rescored(
    hits: dict[str, Hits], codes: list[str], plain: Hits, plain_replicates: dict[str, np.ndarray], seed: int
) -> dict[str, Any]:
    """Per method: per-language and average P@1, and the paired gain over plain cosine with its interval."""
    out: dict[str, Any] = {}
    for method, by_direction in hits.items():
        average, replicates = _averages(by_direction, seed)
        gain: dict[str, Any] = {}
        for direction in by_direction:
            gain[direction] = pct(_macro(by_direction[direction]) - _macro(plain[direction]))
            lo, hi = percentile_interval(replicates[direction] - plain_replicates[direction])
            gain[f"{direction}_ci95"] = [pct(lo), pct(hi)]
        per_language = {code: {d: pct(h[i].mean()) for d, h in by_direction.items()} for i, code in enumerate(codes)}
        out[method] = {"per_language": per_language, "average": average, "gain_over_cosine": gain}
    return out


HitFn = Callable[..., np.ndarray]
BUCC_NOT_RRF = "not scored: rrf scores rank one query's candidates, and mining needs one threshold for all pairs"


def _rrf_search(embedder: SystemEmbedder) -> HitFn | None:
    """The service's RRF search over this system's stored (concat) rows; None for a cosine-scored system."""
    if embedder.method != "rrf":
        return None
    return functools.partial(hits_rrf, dims=embedder.dims, weights=embedder.weights, rrf_k=embedder.rrf_k)


def _hitters(reference: np.ndarray | None) -> dict[str, HitFn]:
    """The rescoring variants to score: paper and service always, `reference` when a reference was embedded."""
    if reference is None:
        return dict(HITS)
    return {**HITS, "reference": functools.partial(hits_reference, reference=reference)}


def _empty_rescore_hits(
    methods: list[str], directions: tuple[str, ...], variants: dict[str, HitFn]
) -> dict[str, dict[str, Hits]]:
    return {v: {m: {d: [] for d in directions} for m in methods} for v in variants}


async def _tatoeba(
    embedder: SystemEmbedder,
    pairs: list[tatoeba.TatoebaPair],
    name: str,
    seed: int,
    rescore: list[str],
    variants: dict[str, HitFn],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per-language and averaged P@1 of one system, plus its bootstrap replicates for paired gains."""
    per_language: dict[str, dict[str, Any]] = {}
    hits: Hits = {"xx_en": [], "en_xx": []}
    rescored = _empty_rescore_hits(rescore, ("xx_en", "en_xx"), variants)
    rrf = _rrf_search(embedder)
    for pair in tqdm(pairs, desc=f"{name} tatoeba", unit="lang"):
        code = pair.language.iso3
        xx = await embedder.embed_language(pair.xx, desc=f"{code} xx")
        en = await embedder.embed_language(pair.en, desc=f"{code} en")
        inverse = np.empty_like(pair.gold)
        inverse[pair.gold] = np.arange(pair.gold.size)
        xx_en, en_xx = (
            tatoeba.evaluate(xx, en, pair.gold) if rrf is None else (rrf(xx, en, pair.gold), rrf(en, xx, inverse))
        )
        hits["xx_en"].append(xx_en)
        hits["en_xx"].append(en_xx)
        per_language[code] = {
            "code": pair.language.code,
            "n": len(pair.xx),
            "xx_en": pct(xx_en.mean()),
            "en_xx": pct(en_xx.mean()),
        }
        for variant, by_method in rescored.items():
            for method, by_direction in by_method.items():
                by_direction["xx_en"].append(variants[variant](xx, en, pair.gold, method, MARGIN_K))
                by_direction["en_xx"].append(variants[variant](en, xx, inverse, method, MARGIN_K))
    average, replicates = _averages(hits, seed)
    result: dict[str, Any] = {"per_language": per_language, "average": average}
    codes = [pair.language.iso3 for pair in pairs]
    result["families"] = _family_means(hits, codes, seed, replicates)
    for variant, by_method in rescored.items():
        if by_method:
            result[RESCORED_KEY[variant]] = _rescored(by_method, codes, hits, replicates, seed)
    return result, replicates


def _family_means(hits: Hits, codes: list[str], seed: int, replicates: dict[str, np.ndarray]) -> dict[str, Any]:
    """Macro P@1 per language family; adds each family's bootstrap replicates to `replicates`.

    Every system bootstraps a family with the same seed over the same language sizes, so replicate
    differences are paired, as for the average.
    """
    out: dict[str, Any] = {}
    for family, positions in group_by_family(codes).items():
        entry: dict[str, Any] = {"languages": [codes[i] for i in positions]}
        for direction, per_language in hits.items():
            chosen = [per_language[i] for i in positions]
            entry[direction] = pct(_macro(chosen))
            replicates[_family_key(family, direction)] = bootstrap_macro_means(chosen, N_BOOTSTRAP, seed)
        out[family] = entry
    return out


def _family_key(family: str, direction: str) -> str:
    return f"family:{family}:{direction}"


async def _stsb_dev(
    embedder: SystemEmbedder,
    pairs: list[stsb_dev.DevPair],
    name: str,
    seed: int,
    rescore: list[str],
    variants: dict[str, HitFn],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Strict xx->en P@1 per dev language and averaged, plus rescored versions; English embedded once.
    Also the bootstrap replicates, for paired gains between systems."""
    english = sorted({t for pair in pairs for t in pair.en})
    en_all = await embedder.embed_language(english, desc="stsb-dev en")
    row = {text: i for i, text in enumerate(english)}
    per_language: dict[str, dict[str, Any]] = {}
    hits: Hits = {"xx_en": []}
    rescored = _empty_rescore_hits(rescore, ("xx_en",), variants)
    rrf = _rrf_search(embedder)
    for pair in tqdm(pairs, desc=f"{name} stsb-dev", unit="lang"):
        xx = await embedder.embed_language(pair.xx, desc=f"stsb-dev {pair.lang}")
        en = en_all[[row[t] for t in pair.en]]
        gold = np.arange(len(pair.xx))
        plain = (
            hits_paper(xx, en, gold, "none", MARGIN_K, strict=True) if rrf is None else rrf(xx, en, gold, strict=True)
        )
        hits["xx_en"].append(plain)
        per_language[pair.lang] = {"n": len(pair.xx), "xx_en": pct(plain.mean())}
        for variant, by_method in rescored.items():
            for method, by_direction in by_method.items():
                by_direction["xx_en"].append(variants[variant](xx, en, gold, method, MARGIN_K, strict=True))
    average, replicates = _averages(hits, seed)
    result: dict[str, Any] = {"per_language": per_language, "average": average}
    codes = [pair.lang for pair in pairs]
    for variant, by_method in rescored.items():
        if by_method:
            result[RESCORED_KEY[variant]] = _rescored(by_method, codes, hits, replicates, seed)
    return result, replicates


def _dev_gains(
    dev_results: dict[str, Any], replicates: dict[str, dict[str, np.ndarray]], baseline: str
) -> dict[str, Any]:
    """Each system's dev gain over the baseline with a paired bootstrap 95% interval: the dev set is where
    choices are made, and a choice between systems needs their difference's error, not two separate ones."""
    if baseline not in dev_results:
        return {}
    base = dev_results[baseline]["average"]["xx_en"]
    gains: dict[str, Any] = {}
    for name, result in dev_results.items():
        if name == baseline:
            continue
        lo, hi = percentile_interval(replicates[name]["xx_en"] - replicates[baseline]["xx_en"])
        gains[name] = {
            "baseline": baseline,
            "xx_en": round(result["average"]["xx_en"] - base, 2),
            "xx_en_ci95": [pct(lo), pct(hi)],
        }
    return gains


async def _bucc(embedder: SystemEmbedder, corpus: bucc.BuccCorpus, cfg: RunConfig) -> dict[str, Any]:
    """Mining F1 with ratio margin and with plain cosine, each with CV and oracle thresholds."""
    x = await embedder.embed_language(corpus.src.unique_texts, desc="bucc zh")
    y = await embedder.embed_language(corpus.tgt.unique_texts, desc="bucc en")
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
        entry["families"] = _family_gains(result, base, replicates[name], replicates[baseline])
        entry["families_losing"] = {
            d: [f for f, g in entry["families"].items() if g[d] < 0] for d in ("xx_en", "en_xx")
        }
        entry["families_losing_ci"] = {  # the whole 95% interval below zero
            d: [f for f, g in entry["families"].items() if g[f"{d}_ci95"][1] < 0] for d in ("xx_en", "en_xx")
        }
        gains[name] = entry
    return gains


def _family_gains(
    result: dict[str, Any], base: dict[str, Any], ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Per family: mean gain over its languages with a paired bootstrap 95% interval."""
    out: dict[str, Any] = {}
    for family, entry in result.get("families", {}).items():
        if family not in base.get("families", {}):
            continue
        gain: dict[str, Any] = {"languages": entry["languages"]}
        for direction in ("xx_en", "en_xx"):
            diff = ours[_family_key(family, direction)] - theirs[_family_key(family, direction)]
            gain[direction] = round(entry[direction] - base["families"][family][direction], 2)  # as the average's
            lo, hi = percentile_interval(diff)
            gain[f"{direction}_ci95"] = [pct(lo), pct(hi)]
        out[family] = gain
    return out


async def run_benchmarks(systems: list[System], cfg: RunConfig, baseline: str) -> dict[str, Any]:
    """Benchmark every system on the configured tasks; the dict is what `report` writes."""
    started = time.perf_counter()
    pairs = [tatoeba.load_pair(cfg.data_dir, lang, cfg.max_sentences) for lang in cfg.languages]
    dev_pairs: list[stsb_dev.DevPair] = []
    if "stsb-dev" in cfg.tasks:
        dev_pairs = stsb_dev.load_dev(cfg.data_dir, cfg.stsb_languages, cfg.max_sentences)
    corpus: bucc.BuccCorpus | None = None
    if "bucc" in cfg.tasks:
        corpus = bucc.load_bucc(cfg.data_dir)
        if cfg.max_sentences is not None:
            corpus = bucc.cap_corpus(corpus, cfg.max_sentences)
    system_info: dict[str, Any] = {}
    tatoeba_results: dict[str, Any] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    bucc_results: dict[str, Any] = {}
    bucc_not_scored: dict[str, str] = {}
    dev_results: dict[str, Any] = {}
    dev_replicates: dict[str, dict[str, np.ndarray]] = {}
    reference_texts = None
    if cfg.rescore_reference and cfg.rescore:  # the service's own reader: the same sentences, the same refusals
        max_chars = Settings.model_fields["max_chars_per_text"].default
        try:
            reference_texts, _ = read_reference(cfg.rescore_reference, max_chars)
        except StartupError as exc:  # a bad file is bad input here (exit 2), not a failure to embed
            raise BenchmarkError(str(exc)) from None
    for system in systems:
        t0 = time.perf_counter()
        async with SystemEmbedder(system, cfg.cache_dir, cfg.threads) as embedder:
            reference = await embedder.embed(reference_texts, desc="hubness reference") if reference_texts else None
            variants = _hitters(reference)
            rescore = cfg.rescore if embedder.method != "rrf" else []  # the service refuses rescoring with rrf
            if "tatoeba" in cfg.tasks:
                tatoeba_results[system.name], replicates[system.name] = await _tatoeba(
                    embedder, pairs, system.name, cfg.seed, rescore, variants
                )
            if dev_pairs:
                dev_results[system.name], dev_replicates[system.name] = await _stsb_dev(
                    embedder, dev_pairs, system.name, cfg.seed, rescore, variants
                )
            if corpus is not None and embedder.method == "rrf":
                bucc_not_scored[system.name] = BUCC_NOT_RRF
            elif corpus is not None:
                bucc_results[system.name] = await _bucc(embedder, corpus, cfg)
            system_info[system.name] = {
                "repo": str(system.repo),
                "fingerprint": embedder.fingerprint,
                "members": embedder.names,
                "member_fingerprints": [m.fingerprint for m in embedder.members],
                "base_models": sorted({s.spec.base_model for m in embedder.members for s in m.repository.members}),
                "fusion": embedder.method,
                "center": "language" if embedder.center else None,
                **({"rrf_k": embedder.rrf_k} if embedder.method == "rrf" else {}),
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
            "rescore": cfg.rescore,
            "rescore_k": MARGIN_K,
            "rescore_service_candidates": candidate_count(1),
            "rescore_reference": _reference_facts(cfg.rescore_reference, reference_texts),
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
    if dev_pairs:
        results["stsb_dev"] = {
            "protocol": stsb_dev.PROTOCOL,
            "languages": [{"code": pair.lang, "n_used": len(pair.xx)} for pair in dev_pairs],
            "results": dev_results,
            "gains": _dev_gains(dev_results, dev_replicates, baseline),
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
            "not_scored": bucc_not_scored,
        }
    results["wall_s"] = round(time.perf_counter() - started, 2)
    return results
