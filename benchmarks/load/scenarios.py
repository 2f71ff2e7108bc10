"""The load scenarios of issue 5: each starts its own servers, loads them, and returns one JSON record.

Systems that are compared run in the same scenario, with the same texts in the same order, and
are loaded alternately (configuration by configuration, all servers up), so a change in machine
load between runs hits every system alike. Servers run as separate processes (see processes.py).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.load.ceiling import gemm_rate, ort_ceiling
from benchmarks.load.processes import Endpoint, infinity_server, xret_server
from benchmarks.load.runner import LoadSpec, run_load
from benchmarks.load.synthetic import build_synthetic_index, ivf_nlist_for
from benchmarks.load.targets import DEFAULT_HTTP_CLIENT, Target, make_target
from benchmarks.load.texts import DEFAULT_TATOEBA, TextStream, load_sentences
from service.encoders.packing import DEFAULT_PACK_TOKENS
from service.index import IndexParams
from service.repository import load_repository

ROOT = Path(__file__).resolve().parents[2]
INDEXED = 2000  # real Tatoeba sentences indexed for the search runs (search cost at this size is small)
# (concurrency, texts per request): the 32 x 1 target; 32-text requests with two in the queue (4) and with
# the queue kept full (16), where the batcher can pick texts of similar length out of ~500 waiting; and c=1
PEER_CONFIGS = ((32, 1), (4, 32), (16, 32), (1, 32))
REDIS_DB_URL = "redis://127.0.0.1:6379/12"  # a database of its own: flushed before a cold run
XRET_PACKAGES = ("onnxruntime", "numpy", "tokenizers", "faiss-cpu", "fastapi", "uvicorn", "grpcio", "httpx")
PEER_PACKAGES = (
    "infinity-emb",
    "sentence-transformers",
    "optimum",
    "optimum-onnx",
    "transformers",
    "torch",
    "onnxruntime",
    "numpy",
)


@dataclass
class Setup:
    """Where things are and how long each measured run lasts."""

    repo: Path = ROOT / "artifacts" / "repo"
    repo3: Path = ROOT / "artifacts" / "repo3"
    repo_int8: Path | None = None  # the same model quantised (`python -m export quantize`), for scenario fixes
    search_index_size: int = 300_000  # synthetic flat index of scenario fixes' search runs
    work: Path = Path("/tmp/xret-load")
    tatoeba: Path = DEFAULT_TATOEBA
    duration_s: float = 10.0
    warmup_s: float = 2.0
    max_requests: int = 200_000
    peers_python: Path = Path("/work/peers-venv/bin/python")
    infinity_bin: Path = Path("/work/peers-venv/bin/infinity_emb")
    peer_model: Path = Path("/work/peers-model")
    concurrencies: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    open_shares: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9, 1.1])
    index_sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    recall_queries: int = 200
    pack_tokens: int = DEFAULT_PACK_TOKENS  # scenario packing: rows of the packed server (the service's default)
    http_client: str = DEFAULT_HTTP_CLIENT  # REST client library of the load generator (targets.HTTP_CLIENTS)


# ---------------------------------------------------------------------------------------------- helpers
def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc; None when unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    target: Target,
    texts: list[str],
    per_request: int,
    spec: LoadSpec,
    setup: Setup,
    server: Endpoint | None = None,
    **labels: Any,
) -> dict[str, Any]:
    """One bounded run plus the CPU both sides spent in it; `labels` are copied into the record."""
    spec.max_requests = min(spec.max_requests, setup.max_requests)
    stream = TextStream(texts, per_request)
    pid = server.pid if server else None
    server_cpu, client_cpu, load_before = _cpu_seconds(pid), time.process_time(), os.getloadavg()[0]
    record = asyncio.run(run_load(target, stream, spec, server.rest if server else None))
    client_cpu = time.process_time() - client_cpu
    server_after = _cpu_seconds(pid)
    record["client_cpu_s"] = round(client_cpu, 3)
    if server_cpu is not None and server_after is not None:
        record["server_cpu_s"] = round(server_after - server_cpu, 3)
        if record["ok"]:
            record["server_cpu_ms_per_text"] = round(
                (server_after - server_cpu) * 1000 / (record["ok"] * per_request), 3
            )
    record["loadavg_1m_before"] = round(load_before, 2)
    record.update(labels)
    print(_line(record), file=sys.stderr, flush=True)
    return record


def _line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"rate={r.get('offered_rps')}"
    return (
        f"  {r['system']:<22} {load:<9} x{r['texts_per_request']:<3} {r['texts_per_s']:>8.1f} texts/s  "
        f"p50 {lat['p50']} p99 {lat['p99']} ms  errors {r['errors'] or 0}"
    )


def closed(concurrency: int, setup: Setup) -> LoadSpec:
    return LoadSpec(
        mode="closed",
        concurrency=concurrency,
        duration_s=setup.duration_s,
        warmup_s=setup.warmup_s,
        max_requests=setup.max_requests,
    )


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def populate(base_url: str, pairs: list[tuple[str, str]], batch: int = 64) -> float:
    """Index real sentences through POST /sentences (the real write path); returns seconds taken."""
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=600.0) as client:
        for i in range(0, len(pairs), batch):
            body = {"sentences": [{"text": text, "lang": lang} for lang, text in pairs[i : i + batch]]}
            response = client.post("/sentences", json=body)
            response.raise_for_status()
    return round(time.perf_counter() - started, 2)


def search_ids(base_url: str, queries: list[str], k: int) -> list[list[str]]:
    """Hit ids per query over REST, in 16-query requests (for recall, not timing)."""
    out: list[list[str]] = []
    with httpx.Client(base_url=base_url, timeout=600.0) as client:
        for i in range(0, len(queries), 16):
            response = client.post("/search", json={"queries": queries[i : i + 16], "k": k})
            response.raise_for_status()
            out.extend([hit["id"] for hit in result["hits"]] for result in response.json()["results"])
    return out


def recall_at_k(approximate: list[list[str]], exact: list[list[str]], k: int) -> float:
    """Mean share of the exact top-k that the approximate top-k found."""
    shares = [len(set(a[:k]) & set(e[:k])) / max(1, min(k, len(e))) for a, e in zip(approximate, exact, strict=True)]
    return round(sum(shares) / len(shares), 4) if shares else math.nan


def _versions(packages: tuple[str, ...], python: Path | None = None) -> dict[str, str]:
    if python is None:
        out = {}
        for name in packages:
            try:
                out[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                out[name] = "not installed"
        return out
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: out[p] = 'not installed'\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, timeout=120)
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {"error": done.stderr[-300:]}


def host_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()}


def _pairs(setup: Setup, limit: int = 60_000) -> list[tuple[str, str]]:
    return load_sentences(setup.tatoeba, limit=limit)


def _peers_ready(setup: Setup) -> str | None:
    """Why the peers cannot run here, or None when they can."""
    for path, what in (
        (setup.peers_python, "peers' python"),
        (setup.infinity_bin, "infinity_emb"),
        (setup.peer_model / "model.onnx", "peer model (HF-layout ONNX export)"),
    ):
        if not path.exists():
            return f"{what} not found at {path}"
    return None


# -------------------------------------------------------------------------------------------- scenarios
def scenario_peers(setup: Setup) -> dict[str, Any]:
    """xret /v1/embeddings and gRPC Embed vs infinity-emb, sentence-transformers and bare onnxruntime.

    The in-process baselines (bare onnxruntime, sentence-transformers) run before and after the
    server runs, so a change of machine load during the scenario shows as a spread between the two.
    """
    pairs = _pairs(setup)
    texts = [t for _, t in pairs]
    member = load_repository(setup.repo).members[0]
    prefix = member.spec.text_prefix
    gemm = gemm_rate()

    def baselines() -> dict[str, Any]:
        ceiling = {
            ("sorted" if sort else "unsorted"): ort_ceiling(
                member.onnx_path.parent,
                texts[:2000],
                prefix=prefix,
                max_length=member.spec.max_length,
                sort=sort,
                gemm_gflops=gemm["gflops_best"],
            )
            for sort in (True, False)
        }
        print(f"  ceiling {ceiling['sorted']['sentences_per_s']} sentences/s (sorted)", file=sys.stderr, flush=True)
        st = _sentence_transformers(setup, [prefix + t for t in texts[:2000]])
        return {"ceiling": ceiling, "sentence_transformers": st}

    before = baselines()
    runs: list[dict[str, Any]] = []
    problem = _peers_ready(setup)
    with ExitStack() as stack:
        xret = stack.enter_context(_uncached_xret(setup, setup.repo, "peers"))
        infinity = start_infinity(stack, setup)
        for concurrency, per_request in PEER_CONFIGS:
            runs.append(
                measure(
                    make_target("rest-embed", name="xret-rest", url=xret.rest, http_client=setup.http_client),
                    texts,
                    per_request,
                    closed(concurrency, setup),
                    setup,
                    xret,
                )
            )
            runs.append(
                measure(
                    make_target("grpc-embed", name="xret-grpc", grpc_target=xret.grpc),
                    texts,
                    per_request,
                    closed(concurrency, setup),
                    setup,
                    xret,
                )
            )
            if infinity is not None:
                target = infinity_target(setup, infinity.rest)
                runs.append(measure(target, texts, per_request, closed(concurrency, setup), setup, infinity))
    after = baselines()
    ceiling = _mean([before["ceiling"]["sorted"]["sentences_per_s"], after["ceiling"]["sorted"]["sentences_per_s"]])
    st = _mean([b["sentence_transformers"].get("sentences_per_s") for b in (before, after)])
    return {
        "gemm": gemm,
        "before": before,
        "after": after,
        "ceiling_sentences_per_s": ceiling,
        "sentence_transformers_sentences_per_s": st,
        "infinity_problem": problem,
        "runs": runs,
        "ratios": _peer_ratios(runs, ceiling, st),
    }


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v]
    return round(sum(known) / len(known), 2) if known else None


def _find(runs: list[dict[str, Any]], system: str, concurrency: int, per_request: int) -> dict[str, Any] | None:
    for r in runs:
        if (r["system"], r.get("concurrency"), r["texts_per_request"], r["mode"]) == (
            system,
            concurrency,
            per_request,
            "closed",
        ):
            return r
    return None


def _uncached_xret(setup: Setup, repo: Path, name: str) -> Any:
    """An xret server with its query cache off (every request encodes) on a fresh index `name`."""
    return xret_server(
        repo, fresh_dir(setup.work / "index" / name), setup.work / "logs" / f"xret-{name}.log", {"cache_size": "0"}
    )


def start_infinity(stack: ExitStack, setup: Setup) -> Endpoint | None:
    """infinity-emb started inside `stack` when the peers are installed, else None (the caller records why)."""
    if _peers_ready(setup) is not None:
        return None
    return stack.enter_context(
        infinity_server(setup.infinity_bin, setup.peer_model, setup.work / "logs" / "infinity.log")
    )


@functools.lru_cache(maxsize=8)
def _text_prefix(repo: Path) -> str:
    """The served model's text prefix, read once per repository (targets are built before every run)."""
    return load_repository(repo).members[0].spec.text_prefix


def infinity_target(setup: Setup, url: str, name: str = "infinity", http_client: str | None = None) -> Target:
    """infinity's /embeddings with the model's text prefix added on the client (infinity does not add it)."""
    return make_target(
        "openai-embed",
        name=name,
        url=url,
        model=".",
        text_prefix=_text_prefix(setup.repo),
        http_client=http_client or setup.http_client,
    )


def _peer_ratios(runs: list[dict[str, Any]], ceiling: float | None, st: float | None) -> dict[str, Any]:
    """The issue's targets as numbers: throughput and p99 ratios to infinity, share of the ceiling."""
    out: dict[str, Any] = {}
    for system in ("xret-rest", "xret-grpc"):
        for concurrency, per_request in PEER_CONFIGS:
            ours = _find(runs, system, concurrency, per_request)
            peer = _find(runs, "infinity", concurrency, per_request)
            key = f"{system}_c{concurrency}x{per_request}"
            if ours is None:
                continue
            entry: dict[str, Any] = {}
            if ceiling:
                entry["of_ceiling"] = round(ours["texts_per_s"] / ceiling, 3)
            if st:
                entry["vs_sentence_transformers"] = round(ours["texts_per_s"] / st, 3)
            if peer is not None and peer["texts_per_s"]:
                entry["throughput_vs_infinity"] = round(ours["texts_per_s"] / peer["texts_per_s"], 3)
                if ours["latency_ms"]["p99"] and peer["latency_ms"]["p99"]:
                    entry["p99_vs_infinity"] = round(ours["latency_ms"]["p99"] / peer["latency_ms"]["p99"], 3)
            out[key] = entry
    return out


def _sentence_transformers(setup: Setup, texts: list[str]) -> dict[str, Any]:
    """Run st_baseline.py under the peers' interpreter; the reason it could not run, if so."""
    if not setup.peers_python.exists():
        return {"problem": f"peers' python not found at {setup.peers_python}"}
    texts_file = setup.work / "st_texts.json"
    texts_file.parent.mkdir(parents=True, exist_ok=True)
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    script = Path(__file__).with_name("st_baseline.py")
    command = [str(setup.peers_python), str(script), "--model", str(setup.peer_model), "--texts", str(texts_file)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode != 0:
        return {"problem": f"exit {done.returncode}: {done.stderr[-500:]}", "command": command}
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    result["command"] = command
    print(f"  sentence-transformers {result['sentences_per_s']} sentences/s", file=sys.stderr, flush=True)
    return result


def scenario_concurrency(setup: Setup) -> dict[str, Any]:
    """Closed loop 1..64, then open loop at shares of each system's closed-loop peak (xret REST embed, infinity)."""
    pairs = _pairs(setup)
    texts = [t for _, t in pairs[INDEXED:]]
    runs: list[dict[str, Any]] = []
    problem = _peers_ready(setup)
    with ExitStack() as stack:
        xret = stack.enter_context(_uncached_xret(setup, setup.repo, "concurrency"))
        populate_s = populate(xret.rest, pairs[:INDEXED])
        infinity = start_infinity(stack, setup)
        targets: list[tuple[Callable[[], Target], Endpoint]] = [
            (
                lambda: make_target("rest-embed", name="xret-rest-embed", url=xret.rest, http_client=setup.http_client),
                xret,
            ),
            (lambda: make_target("grpc-embed", name="xret-grpc-embed", grpc_target=xret.grpc), xret),
            (
                lambda: make_target(
                    "rest-search", name="xret-rest-search", url=xret.rest, http_client=setup.http_client
                ),
                xret,
            ),
            (lambda: make_target("grpc-search", name="xret-grpc-search", grpc_target=xret.grpc), xret),
        ]
        if infinity is not None:
            inf = infinity
            targets.append((lambda: infinity_target(setup, inf.rest, name="infinity-embed"), inf))
        for concurrency in setup.concurrencies:
            for factory, endpoint in targets:
                runs.append(measure(factory(), texts, 1, closed(concurrency, setup), setup, endpoint))
        # open loop at shares of each system's own closed-loop peak, so every machine gets a knee
        for factory, endpoint in (targets[0], targets[-1]) if infinity is not None else (targets[0],):
            name = factory().name
            peak = max(r["texts_per_s"] for r in runs if r["system"] == name)
            for share in setup.open_shares:
                spec = LoadSpec(
                    mode="open",
                    rate=round(share * peak, 2),
                    arrival="poisson",
                    duration_s=setup.duration_s,
                    warmup_s=setup.warmup_s,
                    max_requests=setup.max_requests,
                )
                runs.append(measure(factory(), texts, 1, spec, setup, endpoint, share_of_peak=share))
    return {"index_sentences": INDEXED, "populate_s": populate_s, "infinity_problem": problem, "runs": runs}


def scenario_ensemble(setup: Setup) -> dict[str, Any]:
    """One member vs the 3-member ensemble (layer variants 8, 10, 12 of the same base model)."""
    pairs = _pairs(setup)
    texts = [t for _, t in pairs[INDEXED:]]
    runs: list[dict[str, Any]] = []
    populate_s = {}
    with ExitStack() as stack:
        servers = {}
        for label, repo in (("1-member", setup.repo), ("3-member", setup.repo3)):
            ep = stack.enter_context(_uncached_xret(setup, repo, f"ensemble-{label}"))
            populate_s[label] = populate(ep.rest, pairs[:INDEXED])
            servers[label] = (ep, len(load_repository(repo).members))
        for kind, concurrency, per_request in (
            ("rest-embed", 1, 1),
            ("rest-embed", 32, 1),
            ("rest-embed", 4, 32),
            ("rest-search", 16, 1),
        ):
            for label, (ep, members) in servers.items():
                target = make_target(kind, name=f"xret-{label}-{kind}", url=ep.rest, http_client=setup.http_client)
                runs.append(measure(target, texts, per_request, closed(concurrency, setup), setup, ep, members=members))
    return {
        "index_sentences": INDEXED,
        "populate_s": populate_s,
        "runs": runs,
        "note": "3-member = layers 8, 10, 12 of multilingual-e5-small (layer variants, not trained members)",
    }


def _flush_redis_db() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_DB_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def scenario_cache(setup: Setup) -> dict[str, Any]:
    """Cold (every query new) vs warm (a 128-query pool, primed by the warm-up) cache, memory and Redis."""
    pairs = _pairs(setup)
    fresh = [t for _, t in pairs[INDEXED:]]
    pool = fresh[:128]
    runs: list[dict[str, Any]] = []
    for backend, settings in (("memory", {}), ("redis", {"redis_url": REDIS_DB_URL})):
        if backend == "redis":
            _flush_redis_db()
        with xret_server(
            setup.repo,
            fresh_dir(setup.work / "index" / f"cache-{backend}"),
            setup.work / "logs" / f"xret-cache-{backend}.log",
            settings,
        ) as ep:
            populate(ep.rest, pairs[:INDEXED])
            for kind in ("rest-search", "rest-embed"):
                # cold first: a warm run would have cached the pool's texts
                offset = 20_000 if kind == "rest-embed" else 0
                runs.append(
                    measure(
                        make_target(kind, name=f"xret-{kind}", url=ep.rest, http_client=setup.http_client),
                        fresh[len(pool) + offset :],
                        1,
                        closed(16, setup),
                        setup,
                        ep,
                        cache=backend,
                        state="cold",
                    )
                )
                runs.append(
                    measure(
                        make_target(kind, name=f"xret-{kind}", url=ep.rest, http_client=setup.http_client),
                        pool,
                        1,
                        closed(16, setup),
                        setup,
                        ep,
                        cache=backend,
                        state="warm",
                    )
                )
    return {"index_sentences": INDEXED, "warm_pool": len(pool), "runs": runs}


def scenario_index(setup: Setup) -> dict[str, Any]:
    """Flat vs IVF vs HNSW at each size: /search latency (c=1, c=16) and recall@10 against flat."""
    pairs = _pairs(setup, limit=20_000)
    queries = [t for _, t in pairs]
    recall_queries = queries[: setup.recall_queries]
    builds: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    recall: dict[str, Any] = {}
    for n in setup.index_sizes:
        exact: list[list[str]] = []
        nlist = ivf_nlist_for(n)
        for kind in ("flat", "ivf", "hnsw"):
            params = IndexParams(kind=kind, ivf_nlist=nlist)  # type: ignore[arg-type]
            directory = setup.work / "index" / f"synthetic-{n}-{kind}"
            print(f"  building {kind} index of {n} vectors", file=sys.stderr, flush=True)
            builds[f"{n}-{kind}"] = build_synthetic_index(directory, setup.repo, n, params)
            settings = {"cache_size": "0", "index_kind": kind, "ivf_nlist": str(nlist), "snapshot_interval_s": "0"}
            with xret_server(setup.repo, directory, setup.work / "logs" / f"xret-index-{n}-{kind}.log", settings) as ep:
                ids = search_ids(ep.rest, recall_queries, 10)
                if kind == "flat":
                    exact = ids
                recall[f"{n}-{kind}"] = recall_at_k(ids, exact, 10)
                for concurrency in (1, 16):
                    target = make_target(
                        "rest-search", name=f"xret-search-{kind}", url=ep.rest, http_client=setup.http_client
                    )
                    runs.append(
                        measure(
                            target,
                            queries[setup.recall_queries :],
                            1,
                            closed(concurrency, setup),
                            setup,
                            ep,
                            index_size=n,
                            index_kind=kind,
                            recall_at_10=recall[f"{n}-{kind}"],
                        )
                    )
    return {
        "builds": builds,
        "recall_at_10": recall,
        "params": {
            "ivf_nprobe": IndexParams().ivf_nprobe,
            "hnsw_m": IndexParams().hnsw_m,
            "hnsw_ef_search": IndexParams().hnsw_ef_search,
            "ivf_nlist": {str(n): ivf_nlist_for(n) for n in setup.index_sizes},
        },
        "runs": runs,
        "note": "synthetic random unit vectors (no cluster structure: recall is a lower bound); real queries",
    }


def scenario_fixes(setup: Setup) -> dict[str, Any]:
    """Serving settings and the int8 member side by side with infinity (benchmarks/load/variants.py)."""
    from benchmarks.load.variants import scenario_fixes as run_fixes

    return run_fixes(setup)


def scenario_coalescer(setup: Setup) -> dict[str, Any]:
    """Flat search with and without coalesced scans at 1 and 16 clients (benchmarks/load/variants.py)."""
    from benchmarks.load.variants import scenario_coalescer as run_coalescer

    return run_coalescer(setup)


def scenario_recall(setup: Setup) -> dict[str, Any]:
    """IVF and HNSW recall@10 and search time on 100k real sentence vectors (benchmarks/load/real_index.py)."""
    from benchmarks.load.real_index import scenario_recall as run_recall

    return run_recall(setup, cache_dir=setup.work / "embed-cache")


def scenario_clients(setup: Setup) -> dict[str, Any]:
    """The load generator's REST client library compared at 16-64 clients (benchmarks/load/clients.py)."""
    from benchmarks.load.clients import scenario_clients as run_clients

    return run_clients(setup)


def scenario_packing(setup: Setup) -> dict[str, Any]:
    """Packed and padded serving and infinity in interleaved rounds (benchmarks/load/packing_ab.py)."""
    from benchmarks.load.packing_ab import scenario_packing as run_packing

    return run_packing(setup)


def scenario_spinning(setup: Setup) -> dict[str, Any]:
    """Spin-waiting off and on (a one-member server's default), packed, and infinity in rounds (packing_ab.py)."""
    from benchmarks.load.packing_ab import scenario_spinning as run_spinning

    return run_spinning(setup)


SCENARIOS: dict[str, Callable[[Setup], dict[str, Any]]] = {
    "peers": scenario_peers,
    "concurrency": scenario_concurrency,
    "ensemble": scenario_ensemble,
    "cache": scenario_cache,
    "index": scenario_index,
    "fixes": scenario_fixes,
    "recall": scenario_recall,
    "clients": scenario_clients,
    "packing": scenario_packing,
    "spinning": scenario_spinning,
    "coalescer": scenario_coalescer,
}


def run_scenario(name: str, setup: Setup, out_dir: Path) -> Path:
    """Run one scenario and write results/load/<name>.json with host facts, versions and the command."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    started = time.time()
    host = host_facts()
    print(f"scenario {name} (load average {host['loadavg'][0]:.2f})", file=sys.stderr, flush=True)
    body = SCENARIOS[name](setup)
    record = {
        "scenario": name,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
        "command": [Path(sys.executable).name, "-m", "benchmarks.load.cli", *sys.argv[1:]],
        "host": host,
        "loadavg_after": os.getloadavg(),
        "versions": {
            "xret": _versions(XRET_PACKAGES),
            "peers": _versions(PEER_PACKAGES, setup.peers_python) if setup.peers_python.exists() else {},
        },
        "setup": {k: str(v) if isinstance(v, Path) else v for k, v in setup.__dict__.items()},
        **body,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path


def iter_scenarios(names: list[str]) -> Iterator[str]:
    """`all` expands to every scenario, in a fixed order."""
    for name in names:
        yield from (SCENARIOS if name == "all" else [name])
