"""What each serving change bought: xret configurations side by side with infinity in one run.

PERFORMANCE.md measured four fixes through an out-of-tree wrapper; they are now settings or export
options, so this scenario measures them as a user would turn them on:

* `before`: `--ort-spinning true --bucketing none`, all graph optimizers: the behaviour before the fixes.
* `no-spin`: spin-waiting off, each batch still one padded call.
* `slack`: batches run as length buckets with bounded padding (`--bucketing slack`, stop 7's default).
* `no-sln`: plus onnxruntime's SkipLayerNormalization fusion off (`--ort-disabled-optimizers`).
* `default`: stops 7-14's defaults: batches cut by predicted run time (`--bucketing cost`, calibrated per
  member), spinning off (since stop 15 a one-member server spins unless told not to; `scenario spinning`).
* `threads1-c2`: defaults plus one intra-op thread per member and two encoder batches at once.
* `int8`: the same model quantised by `python -m export quantize` (needs `--repo-int8`).
* search coalescing: 16 clients searching a flat index of synthetic vectors with concurrent searches
  sharing one scan (`default`) against every search scanning alone (`search_concurrency` 64, no wait).

All servers stay up and are loaded configuration by configuration, alternating systems, so a change
of machine load hits every system alike; the bare-onnxruntime ceiling runs before and after, for the
fp32 and the int8 graph.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.load.ceiling import ort_ceiling
from benchmarks.load.processes import Endpoint, xret_server
from benchmarks.load.scenarios import (
    PEER_CONFIGS,
    Setup,
    _mean,
    _pairs,
    _peers_ready,
    closed,
    fresh_dir,
    infinity_target,
    measure,
    start_infinity,
)
from benchmarks.load.synthetic import build_synthetic_index
from benchmarks.load.targets import make_target
from service.index import IndexParams
from service.repository import load_repository

SEARCH_CLIENTS = 16
NO_SPIN = {"cache_size": "0", "ort_spinning": "false"}  # these rows measured stops 7-14's defaults
ALL_OPTIMIZERS = {"ort_disabled_optimizers": ""}
VARIANTS: dict[str, dict[str, str]] = {  # each adds one change to the one before it
    "before": {**NO_SPIN, **ALL_OPTIMIZERS, "ort_spinning": "true", "bucketing": "none"},
    "no-spin": {**NO_SPIN, **ALL_OPTIMIZERS, "bucketing": "none"},
    "slack": {**NO_SPIN, **ALL_OPTIMIZERS, "bucketing": "slack"},
    "no-sln": {**NO_SPIN, "bucketing": "slack"},
    "default": NO_SPIN,  # the defaults of stops 7-14: no spinning, cost buckets, no SkipLayerNorm fusion
    "threads1-c2": {**NO_SPIN, "intra_op_threads": "1", "batcher_concurrency": "2"},
}
SEARCH_VARIANTS: dict[str, dict[str, str]] = {
    "search-coalesced": {"cache_size": "0", "snapshot_interval_s": "0"},
    "search-alone": {
        "cache_size": "0",
        "snapshot_interval_s": "0",
        "search_concurrency": "64",
        "search_max_wait_ms": "0",
    },
}
# scenario coalescer adds one search at a time: every row that waits joins the next group, so groups grow and
# no two FAISS calls (each with all OpenMP threads) share the cores
COALESCER_VARIANTS = {
    **SEARCH_VARIANTS,
    "search-serial": {**SEARCH_VARIANTS["search-coalesced"], "search_concurrency": "1"},
}


def _ceilings(repos: dict[str, Path], texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, repo in repos.items():
        member = load_repository(repo).members[0]
        out[label] = ort_ceiling(
            member.onnx_path.parent, texts, prefix=member.spec.text_prefix, max_length=member.spec.max_length
        )
        print(f"  ceiling {label}: {out[label]['sentences_per_s']} sentences/s", file=sys.stderr, flush=True)
    return out


def scenario_fixes(setup: Setup) -> dict[str, Any]:
    """Embedding throughput of each serving variant vs infinity, and search with and without coalescing."""
    texts = [t for _, t in _pairs(setup)]
    repos = {"fp32": setup.repo}
    if setup.repo_int8 is not None:
        repos["int8"] = setup.repo_int8
    before = _ceilings(repos, texts[:2000])
    runs: list[dict[str, Any]] = []
    problem = _peers_ready(setup)
    with ExitStack() as stack:
        servers: dict[str, Endpoint] = {}
        variants = dict(VARIANTS)
        if setup.repo_int8 is not None:
            variants["int8"] = NO_SPIN
        for label, settings in variants.items():
            repo = setup.repo_int8 if label == "int8" and setup.repo_int8 is not None else setup.repo
            index, log = fresh_dir(setup.work / "index" / f"fixes-{label}"), setup.work / "logs" / f"xret-{label}.log"
            servers[f"xret-{label}"] = stack.enter_context(xret_server(repo, index, log, settings))
        infinity = start_infinity(stack, setup)
        if infinity is not None:
            servers["infinity"] = infinity
        for concurrency, per_request in PEER_CONFIGS:
            for name, ep in servers.items():
                if name == "infinity":
                    target = infinity_target(setup, ep.rest)
                else:
                    target = make_target("rest-embed", name=name, url=ep.rest, http_client=setup.http_client)
                runs.append(measure(target, texts, per_request, closed(concurrency, setup), setup, ep))
    after = _ceilings(repos, texts[:2000])
    search = _search_runs(setup, [t for _, t in _pairs(setup, limit=20_000)])
    return {
        "ceiling": {
            label: _mean([before[label]["sentences_per_s"], after[label]["sentences_per_s"]]) for label in repos
        },
        "before": before,
        "after": after,
        "infinity_problem": problem,
        "runs": runs,
        "ratios": _ratios(runs),
        "search": search,
    }


def _search_runs(
    setup: Setup, queries: list[str], variants: dict[str, dict[str, str]] = SEARCH_VARIANTS
) -> dict[str, Any]:
    """Flat index of synthetic vectors, SEARCH_CLIENTS clients, coalesced vs one scan per request."""
    n = setup.search_index_size
    directory = setup.work / "index" / f"synthetic-{n}-flat"
    build = build_synthetic_index(directory, setup.repo, n, IndexParams(kind="flat"))
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        servers = {}
        for label, settings in variants.items():
            copy = fresh_dir(setup.work / "index" / f"synthetic-{n}-flat-{label}")  # one process per index folder
            shutil.copytree(directory, copy, dirs_exist_ok=True)
            log = setup.work / "logs" / f"xret-{label}.log"
            servers[label] = stack.enter_context(xret_server(setup.repo, copy, log, settings))
        for concurrency in (1, SEARCH_CLIENTS):
            for label, ep in servers.items():
                target = make_target("rest-search", name=label, url=ep.rest)
                runs.append(measure(target, queries, 1, closed(concurrency, setup), setup, ep, index_size=n))
    return {"index_size": n, "build": build, "runs": runs}


def scenario_coalescer(setup: Setup) -> dict[str, Any]:
    """Only the search rows of `fixes` (plus a server searching one group at a time), with ratios over scanning
    alone: what to run at 1M flat (`--search-index-size 1000000`), where a scan takes 0.2-0.4 s and sharing
    scans could pay; at 300k the encoder dominated. Stop 16 measured it on 2 cores: no consistent gain."""
    search = _search_runs(setup, [t for _, t in _pairs(setup, limit=20_000)], COALESCER_VARIANTS)
    return {**search, "summary": coalescing_ratios(search["runs"])}


def coalescing_ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per client count and coalescing server: its searches/s and p99 over the one-scan-per-request server's."""
    by = {(r["system"], r["concurrency"]): r for r in runs}
    out: dict[str, Any] = {}
    for (system, concurrency), shared in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        alone = by.get(("search-alone", concurrency))
        if system == "search-alone" or alone is None or not alone["texts_per_s"]:
            continue
        entry = {"throughput": round(shared["texts_per_s"] / alone["texts_per_s"], 3)}
        if shared["latency_ms"]["p99"] and alone["latency_ms"]["p99"]:
            entry["p99"] = round(shared["latency_ms"]["p99"] / alone["latency_ms"]["p99"], 3)
        out[f"{system}/alone c{concurrency}"] = entry
    return out


def _ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each xret variant's throughput and p99 against infinity's at the same load."""
    out: dict[str, Any] = {}
    peer = {(r.get("concurrency"), r["texts_per_request"]): r for r in runs if r["system"] == "infinity"}
    for r in runs:
        other = peer.get((r.get("concurrency"), r["texts_per_request"]))
        if r["system"] == "infinity" or other is None or not other["texts_per_s"]:
            continue
        key = f"{r['system']}_c{r.get('concurrency')}x{r['texts_per_request']}"
        entry = {"throughput_vs_infinity": round(r["texts_per_s"] / other["texts_per_s"], 3)}
        if r["latency_ms"]["p99"] and other["latency_ms"]["p99"]:
            entry["p99_vs_infinity"] = round(r["latency_ms"]["p99"] / other["latency_ms"]["p99"], 3)
        out[key] = entry
    return out
