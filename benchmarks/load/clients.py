"""Does the load generator's REST client decide the result? httpx and aiohttp against the same servers.

At stop 9 both HTTP servers (xret REST and infinity) collapsed at 64 concurrent clients while xret's
gRPC endpoint, on the same engine and the same machine, kept rising. The load generator is a Python
process on the same two cores as the server, so every CPU millisecond it spends per request is taken
from the server it measures; httpx's AsyncClient is known to cost much more per concurrent request
than aiohttp (encode/httpx#3215). This scenario loads xret `/v1/embeddings` and infinity with each
client library in turn (alternating, two rounds), with gRPC `Embed` as the reference that does not
go through either, and records the client's own CPU per request next to throughput and p99.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from benchmarks.load.scenarios import (
    INDEXED,
    Setup,
    _mean,
    _pairs,
    _peers_ready,
    _uncached_xret,
    closed,
    infinity_target,
    measure,
    start_infinity,
)
from benchmarks.load.targets import HTTP_CLIENTS, make_target

CLIENT_CONCURRENCIES = (16, 32, 64)
ROUNDS = 2


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system (named with its client) and concurrency: mean texts/s, worst p99, client CPU ms per request."""
    out: dict[str, Any] = {}
    for r in runs:
        key = f"{r['system']}|c{r['concurrency']}"
        out.setdefault(key, []).append(r)
    summary: dict[str, Any] = {}
    for key, group in sorted(out.items()):
        ok = [r for r in group if r["ok"]]
        summary[key] = {
            "texts_per_s": _mean([r["texts_per_s"] for r in group]),
            "p99_ms": max((r["latency_ms"]["p99"] or 0.0) for r in group),
            "client_cpu_ms_per_request": _mean([r["client_cpu_s"] * 1000 / r["ok"] for r in ok]),
            "rounds": len(group),
        }
    return summary


def scenario_clients(setup: Setup) -> dict[str, Any]:
    """xret REST and infinity through httpx and through aiohttp, xret gRPC as the reference, 16/32/64 clients."""
    pairs = _pairs(setup)
    texts = [t for _, t in pairs[INDEXED:]]
    problem = _peers_ready(setup)
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        xret = stack.enter_context(_uncached_xret(setup, setup.repo, "clients"))
        infinity = start_infinity(stack, setup)
        for concurrency in CLIENT_CONCURRENCIES:
            spec = closed(concurrency, setup)
            for round_no in range(ROUNDS):
                for client in HTTP_CLIENTS:
                    target = make_target("rest-embed", name=f"xret-rest-{client}", url=xret.rest, http_client=client)
                    runs.append(measure(target, texts, 1, spec, setup, xret, http_client=client, round=round_no))
                    if infinity is not None:
                        peer = infinity_target(setup, infinity.rest, name=f"infinity-{client}", http_client=client)
                        runs.append(measure(peer, texts, 1, spec, setup, infinity, http_client=client, round=round_no))
                grpc = make_target("grpc-embed", name="xret-grpc", grpc_target=xret.grpc)
                runs.append(measure(grpc, texts, 1, spec, setup, xret, round=round_no))
    return {"infinity_problem": problem, "summary": summarise(runs), "runs": runs}
