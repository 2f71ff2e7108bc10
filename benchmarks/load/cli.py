"""`python -m benchmarks.load.cli` (and `python -m benchmarks load`): load runs, scenarios, ceiling, plots.

    run       load one running endpoint (closed loop at each --concurrency, or open loop at each --rate)
    scenario  start servers and run a scenario of issue 5 (peers, concurrency, ensemble, cache, index, all)
    ceiling   bare onnxruntime over a repository member with ideal batches, plus the CPU's GEMM rate
    plot      latency against throughput per system from result files

Results are JSON under results/load/ (one file per run command or scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.load.runner import LoadSpec, Mode, run_load
from benchmarks.load.scenarios import SCENARIOS, Setup, host_facts, iter_scenarios, run_scenario
from benchmarks.load.targets import DEFAULT_HTTP_CLIENT, HTTP_CLIENTS, TARGET_KINDS, make_target
from benchmarks.load.texts import DEFAULT_TATOEBA, TextStream, load_sentences

RESULTS = Path("results/load")


def _numbers(text: str, kind: type[int] | type[float]) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _ints(text: str) -> list[int]:
    return list(_numbers(text, int))


def _floats(text: str) -> list[float]:
    return list(_numbers(text, float))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands, on `parser` (a fresh one, or the `load` subparser of `python -m benchmarks`)."""
    sub = parser.add_subparsers(dest="load_command", required=True)

    run = sub.add_parser("run", help="load one running endpoint")
    run.add_argument("--target", choices=TARGET_KINDS, required=True)
    run.add_argument("--url", default="http://127.0.0.1:8000", help="REST base URL (also scraped for /metrics)")
    run.add_argument("--grpc", default="127.0.0.1:50051", help="gRPC host:port")
    run.add_argument("--name", default=None, help="system name in the results (default: the target kind)")
    run.add_argument("--model", default=None, help="OpenAI `model` field (peers need theirs)")
    run.add_argument("--path", default=None, help="embeddings path (default /v1/embeddings; openai-embed /embeddings)")
    run.add_argument("--prefix", default="", help="prepended to every text (for peers that do not add it)")
    run.add_argument("--mode", choices=("closed", "open"), default="closed")
    run.add_argument("--concurrency", type=_ints, default=[1], help="closed loop: clients, e.g. 1,4,16")
    run.add_argument("--rate", type=_floats, default=[10.0], help="open loop: requests/s, e.g. 50,100")
    run.add_argument("--arrival", choices=("poisson", "constant"), default="poisson")
    run.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    run.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run (not measured)")
    run.add_argument("--max-requests", type=int, default=100_000, help="request budget per measured run")
    run.add_argument("--texts-per-request", type=int, default=1)
    run.add_argument("--pool", type=int, default=50_000, help="distinct Tatoeba texts to cycle through")
    run.add_argument("--k", type=int, default=10, help="hits per query for search targets")
    run.add_argument("--tatoeba", type=Path, default=DEFAULT_TATOEBA)
    run.add_argument("--no-metrics", action="store_true", help="do not scrape URL/metrics")
    run.add_argument("--out", type=Path, default=None, help="JSON file (default results/load/run-<time>.json)")
    run.add_argument("--http-client", choices=HTTP_CLIENTS, default=DEFAULT_HTTP_CLIENT, help="REST client library")

    scenario = sub.add_parser("scenario", help="start servers and run scenarios of issue 5")
    scenario.add_argument("names", nargs="+", choices=[*SCENARIOS, "all"])
    defaults = Setup()
    scenario.add_argument("--repo", type=Path, default=defaults.repo)
    scenario.add_argument("--repo3", type=Path, default=defaults.repo3, help="3-member ensemble repository")
    scenario.add_argument("--repo-int8", type=Path, default=None, help="int8 copy of --repo (scenario fixes)")
    scenario.add_argument("--search-index-size", type=int, default=defaults.search_index_size)
    scenario.add_argument("--work", type=Path, default=defaults.work, help="scratch: index folders, server logs")
    scenario.add_argument("--tatoeba", type=Path, default=defaults.tatoeba)
    scenario.add_argument("--duration", type=float, default=defaults.duration_s)
    scenario.add_argument("--warmup", type=float, default=defaults.warmup_s)
    scenario.add_argument("--max-requests", type=int, default=defaults.max_requests)
    scenario.add_argument("--peers-python", type=Path, default=defaults.peers_python)
    scenario.add_argument("--infinity", type=Path, default=defaults.infinity_bin, help="infinity_emb executable")
    scenario.add_argument(
        "--peer-model",
        type=Path,
        default=defaults.peer_model,
        help="HF folder with config, tokenizer and a last_hidden_state model.onnx",
    )
    scenario.add_argument("--concurrency", type=_ints, default=defaults.concurrencies)
    scenario.add_argument(
        "--open-shares", type=_floats, default=defaults.open_shares, help="open-loop rates as shares of the peak"
    )
    scenario.add_argument("--index-sizes", type=_ints, default=defaults.index_sizes)
    scenario.add_argument("--recall-queries", type=int, default=defaults.recall_queries)
    scenario.add_argument(
        "--pack-tokens", type=int, default=defaults.pack_tokens, help="scenario packing: tokens per packed row"
    )
    scenario.add_argument("--out-dir", type=Path, default=RESULTS)
    scenario.add_argument("--plot", action="store_true", help="also write <name>.png next to each JSON")
    scenario.add_argument(
        "--http-client", choices=HTTP_CLIENTS, default=defaults.http_client, help="REST client of the load generator"
    )

    ceiling = sub.add_parser("ceiling", help="bare onnxruntime throughput and the CPU's GEMM rate")
    ceiling.add_argument("--repo", type=Path, default=defaults.repo)
    ceiling.add_argument("--member", default=None, help="member name (default: the first)")
    ceiling.add_argument("--sentences", type=int, default=2000)
    ceiling.add_argument("--batch-size", type=int, default=32)
    ceiling.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = onnxruntime default)")
    ceiling.add_argument("--tatoeba", type=Path, default=DEFAULT_TATOEBA)
    ceiling.add_argument("--out", type=Path, default=RESULTS / "ceiling.json")

    plot = sub.add_parser("plot", help="latency vs throughput per system from result files")
    plot.add_argument("files", nargs="+", type=Path)
    plot.add_argument("--texts-per-request", type=int, default=1)
    plot.add_argument("--out", type=Path, required=True)
    parser.set_defaults(func=run_parsed)


def _cmd_run(args: argparse.Namespace) -> int:
    texts = [t for _, t in load_sentences(args.tatoeba, limit=args.pool)]
    records = []
    loads: list[tuple[Mode, Any]] = (
        [("closed", c) for c in args.concurrency] if args.mode == "closed" else [("open", r) for r in args.rate]
    )
    for mode, amount in loads:
        spec = LoadSpec(
            mode=mode,
            concurrency=amount if mode == "closed" else 1,
            rate=amount if mode == "open" else 0.0,
            arrival=args.arrival,
            duration_s=args.duration,
            warmup_s=args.warmup,
            max_requests=args.max_requests,
        )
        target = make_target(
            args.target,
            name=args.name or args.target,
            url=args.url,
            grpc_target=args.grpc,
            k=args.k,
            model=args.model,
            path=args.path,
            text_prefix=args.prefix,
            http_client=args.http_client,
        )
        stream = TextStream(texts, args.texts_per_request)
        record = asyncio.run(run_load(target, stream, spec, None if args.no_metrics else args.url))
        records.append(record)
        lat = record["latency_ms"]
        print(
            f"{record['system']} {mode} {amount}: {record['throughput_rps']} req/s, {record['texts_per_s']} texts/s, "
            f"p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} ms, errors {record['errors']}",
            file=sys.stderr,
        )
    out = args.out or RESULTS / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"command": sys.argv, "host": host_facts(), "runs": records}
    out.write_text(json.dumps(body, indent=1), encoding="utf-8")
    print(out)
    return 0 if all(not r["errors"] for r in records) else 1


def _cmd_scenario(args: argparse.Namespace) -> int:
    setup = Setup(
        repo=args.repo,
        repo3=args.repo3,
        repo_int8=args.repo_int8,
        search_index_size=args.search_index_size,
        work=args.work,
        tatoeba=args.tatoeba,
        duration_s=args.duration,
        warmup_s=args.warmup,
        max_requests=args.max_requests,
        peers_python=args.peers_python,
        infinity_bin=args.infinity,
        peer_model=args.peer_model,
        concurrencies=args.concurrency,
        open_shares=args.open_shares,
        index_sizes=args.index_sizes,
        recall_queries=args.recall_queries,
        http_client=args.http_client,
        pack_tokens=args.pack_tokens,
    )
    for name in iter_scenarios(args.names):
        path = run_scenario(name, setup, args.out_dir)
        print(path)
        if args.plot:
            from benchmarks.load.plot import plot_scenario

            try:
                print(plot_scenario(name, path, path.with_suffix(".png")))
            except ValueError as exc:  # a scenario without single-text runs has nothing to plot
                print(f"no plot for {name}: {exc}", file=sys.stderr)
    return 0


def _cmd_ceiling(args: argparse.Namespace) -> int:
    from benchmarks.load.ceiling import gemm_rate, ort_ceiling
    from service.repository import load_repository

    repo = load_repository(args.repo)
    members = {m.spec.name: m for m in repo.members}
    member = members[args.member] if args.member else repo.members[0]
    texts = [t for _, t in load_sentences(args.tatoeba, limit=args.sentences)]
    gemm = gemm_rate()
    results = {
        "gemm": gemm,
        **{
            ("sorted" if sort else "unsorted"): ort_ceiling(
                member.onnx_path.parent,
                texts,
                prefix=member.spec.text_prefix,
                max_length=member.spec.max_length,
                batch_size=args.batch_size,
                sort=sort,
                threads=args.threads,
                gemm_gflops=gemm["gflops_best"],
            )
            for sort in (True, False)
        },
        "host": host_facts(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(json.dumps({k: results[k]["sentences_per_s"] for k in ("sorted", "unsorted")} | {"gemm": gemm}))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from benchmarks.load.plot import plot_latency_throughput

    print(plot_latency_throughput(args.files, args.out, args.texts_per_request))
    return 0


def run_parsed(args: argparse.Namespace) -> int:
    """Dispatch parsed arguments (what `add_arguments` registered) to their subcommand."""
    commands = {"run": _cmd_run, "scenario": _cmd_scenario, "ceiling": _cmd_ceiling, "plot": _cmd_plot}
    return commands[args.load_command](args)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `load` on `python -m benchmarks` (sets `func`, as benchmarks/__main__.py expects)."""
    parser = subparsers.add_parser(
        "load",
        help="load tests: REST/gRPC load runs, scenarios, ceiling, plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run_parsed(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
