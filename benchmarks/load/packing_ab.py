"""Server settings side by side in interleaved rounds: `scenario packing` (packed against padded serving)
and `scenario spinning` (onnxruntime's spin-waiting off against on), each against infinity.

Why a scenario of its own: on this shared 2-core machine the speed of the same loop drifts by a third within
minutes (stop 13: the bare-onnxruntime ceiling read 323 before and 227 after one `scenario peers` run), so two
back-to-back scenario runs compare the machine's moods as much as the settings. Here three servers run side
by side for the whole scenario (idle ones cost nothing): xret serving the member's packed graph (rows of the
scenario's `--pack-tokens`, by default the service's DEFAULT_PACK_TOKENS), xret serving the same member's model.onnx
(`--pack-tokens 0`) and infinity-emb. Each round measures every system at each load, in an order rotated per
round, and the summary gives each round's ratios and their median, so drift moves numerator and denominator
alike. The bare-onnxruntime ceiling (length-sorted batches of 32 through model.onnx, in this process while the
servers idle) takes a turn in the same rotation, so the issue's "fraction of the ceiling" is read inside a
round too, not against a ceiling measured minutes away.

`scenario spinning` asked why the packed server's batches ran ~25% slower than the ceiling's (stop 14): the
ceiling's session lets idle threads spin, the service's did not (`ort_spinning` was off from stop 6, when
spinning threads starved an event loop on a shared machine, before buckets and packing existed). Same
rounds, servers `xret-packed` (`ort_spinning` off) and `xret-spin` (on, a one-member server's default since
stop 15, when this scenario measured it).
"""

from __future__ import annotations

import json
import statistics
import urllib.request
from contextlib import ExitStack
from typing import Any

from benchmarks.load.ceiling import ort_ceiling
from benchmarks.load.processes import xret_server
from benchmarks.load.scenarios import (
    Setup,
    _pairs,
    _peers_ready,
    closed,
    fresh_dir,
    infinity_target,
    measure,
    start_infinity,
)
from benchmarks.load.targets import make_target
from service.errors import StartupError
from service.repository import Member, load_repository

LOADS = ((32, 1), (4, 32))  # the two targets: one-text requests, and 32-text requests
ROUNDS = 3
CEILING = "ceiling"  # the bare-onnxruntime loop's turn in a round
# (ratio, its numerator, its denominator)
RATIOS = (("packed/padded", "xret-packed", "xret-padded"), ("packed/infinity", "xret-packed", "infinity"),
          ("padded/infinity", "xret-padded", "infinity"), ("packed/ceiling", "xret-packed", CEILING),
          ("padded/ceiling", "xret-padded", CEILING), ("spin/packed", "xret-spin", "xret-packed"),
          ("spin/infinity", "xret-spin", "infinity"), ("spin/ceiling", "xret-spin", CEILING))  # fmt: skip


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per load: each system's texts/s and p99 per round, each ratio per round and the median of the rounds.

    A ratio is taken inside one round only (both systems measured within a minute of each other); a system
    missing from a round (infinity not installed) leaves that ratio out rather than pairing across rounds.
    """
    by_load: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for r in runs:
        key = f"{r['concurrency']}x{r['texts_per_request']}"
        by_load.setdefault(key, {}).setdefault(r["round"], {})[r["system"]] = r
    summary: dict[str, Any] = {}
    for key, rounds in sorted(by_load.items()):
        systems = sorted({name for found in rounds.values() for name in found})
        entry: dict[str, Any] = {
            name: {
                "texts_per_s": [rounds[n][name]["texts_per_s"] for n in sorted(rounds) if name in rounds[n]],
                "p99_ms": [rounds[n][name]["latency_ms"]["p99"] for n in sorted(rounds) if name in rounds[n]],
            }
            for name in systems
        }
        for label, top, bottom in RATIOS:
            per_round = [
                round(rounds[n][top]["texts_per_s"] / rounds[n][bottom]["texts_per_s"], 3)
                for n in sorted(rounds)
                if top in rounds[n] and bottom in rounds[n] and rounds[n][bottom]["texts_per_s"]
            ]
            if per_round:
                entry[label] = {"rounds": per_round, "median": round(statistics.median(per_round), 3)}
        summary[key] = entry
    return summary


def served_runtime(base_url: str) -> list[dict[str, Any]]:
    """Each member's runtime as the live server reports it (`GET /info`): spinning, graph, threads, batch limits.

    Read back rather than taken from the flags, so a record says what really ran (a flag the server ignored
    or a graph it could not load would show here).
    """
    with urllib.request.urlopen(base_url + "/info", timeout=30) as reply:
        return [member["runtime"] for member in json.loads(reply.read())["members"]]


def _ceiling_run(member: Member, texts: list[str], round_no: int, concurrency: int, per_request: int) -> dict[str, Any]:
    """The bare-onnxruntime ceiling as one turn of a round, shaped like a load run for `summarise`."""
    ceiling = ort_ceiling(
        member.onnx_path.parent, texts[:2000], prefix=member.spec.text_prefix, max_length=member.spec.max_length
    )
    return {
        "system": CEILING,
        "round": round_no,
        "concurrency": concurrency,
        "texts_per_request": per_request,
        "texts_per_s": ceiling["sentences_per_s"],
        "latency_ms": {"p99": None},
        "ceiling": ceiling,
    }


def scenario_packing(setup: Setup) -> dict[str, Any]:
    """xret packed, xret padded and infinity, ROUNDS interleaved rounds at each of LOADS."""
    servers = {"xret-packed": {"pack_tokens": str(setup.pack_tokens)}, "xret-padded": {"pack_tokens": "0"}}
    return {"pack_tokens": setup.pack_tokens, **interleaved(setup, servers)}


def scenario_spinning(setup: Setup) -> dict[str, Any]:
    """xret packed with spin-waiting off and on (a one-member server's default), and infinity, in rounds."""
    packed = {"pack_tokens": str(setup.pack_tokens)}
    servers = {"xret-packed": {**packed, "ort_spinning": "false"}, "xret-spin": {**packed, "ort_spinning": "true"}}
    return {"pack_tokens": setup.pack_tokens, **interleaved(setup, servers)}


def interleaved(setup: Setup, servers: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Each xret server of `servers` (name -> settings, cache off), the ceiling and infinity, ROUNDS rounds.

    Every round measures every system at each of LOADS, in an order rotated per round; all servers stay up
    for the whole run (an idle one costs nothing), so a round's systems differ only in their settings.
    """
    member = load_repository(setup.repo).members[0]
    if member.packed_onnx_path is None:
        raise StartupError(f"{member.directory}: no model.packed.onnx (export the member with --packed)")
    texts = [t for _, t in _pairs(setup)]
    problem = _peers_ready(setup)
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        started = {}
        for name, settings in servers.items():
            log = setup.work / "logs" / f"{name}.log"
            index = fresh_dir(setup.work / "index" / name)
            started[name] = stack.enter_context(xret_server(setup.repo, index, log, {"cache_size": "0", **settings}))
        runtime = {name: served_runtime(server.rest) for name, server in started.items()}
        infinity = start_infinity(stack, setup)
        for round_no in range(ROUNDS):
            for concurrency, per_request in LOADS:
                order = [*started, CEILING, *(["infinity"] if infinity is not None else [])]
                shift = round_no % len(order)
                for name in order[shift:] + order[:shift]:
                    if name == CEILING:
                        runs.append(_ceiling_run(member, texts, round_no, concurrency, per_request))
                        continue
                    if name == "infinity" and infinity is not None:
                        target, server = infinity_target(setup, infinity.rest), infinity
                    else:
                        server = started[name]
                        target = make_target("rest-embed", name=name, url=server.rest, http_client=setup.http_client)
                    spec = closed(concurrency, setup)
                    runs.append(measure(target, texts, per_request, spec, setup, server, round=round_no))
    summary = summarise(runs)
    return {"servers": servers, "runtime": runtime, "infinity_problem": problem, "summary": summary, "runs": runs}
