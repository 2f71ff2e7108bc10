"""What a language-centred search (`query_lang`) costs against a plain one, side by side in one process.

A centred search (service/centering.py) centres the queries, asks the index for max(10k, 100) candidates
instead of k, reads their stored vectors back and re-ranks them; the first centred search after opening also
counts each language's vector sum from the stored vectors (`recount_s`, timed alone; not in `open_s`). Both
are timed here on a flat index of seeded random unit vectors in eight languages
(`benchmarks.load.synthetic`), at 1 and 16 queries per search, over the whole index and filtered to one
language, as the ratio centred / plain of the median time per search.

    python -m benchmarks.load.centring_cost [--sizes 100000 1000000] [--out results/load/centring_cost.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.load.synthetic import CHUNK, LANGS, unit_vectors
from service.index import IndexParams, Sentence, SentenceIndex

DIM = 384
K = 10
REPEATS = 15
SHAPES = ((1, None), (16, None), (1, LANGS[0]), (16, LANGS[0]))


def _median_seconds(call: Callable[[], object]) -> float:
    call()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(size: int, folder: Path) -> dict[str, Any]:
    """Open time, then plain and centred median seconds per search for every shape at one index size."""
    index = SentenceIndex.open(folder, DIM, "centring-cost", IndexParams(kind="flat"))
    for start in tqdm(range(0, size, CHUNK), desc=f"fill {size}", unit="chunk"):
        n = min(CHUNK, size - start)
        rows = [Sentence(f"s{i}", "-", LANGS[i % len(LANGS)]) for i in range(start, start + n)]
        index.add(rows, unit_vectors(n, DIM, seed=0, start=start))
    index.save()
    index.close()
    started = time.perf_counter()
    index = SentenceIndex.open(folder, DIM, "centring-cost", IndexParams(kind="flat"))
    open_s = time.perf_counter() - started
    started = time.perf_counter()
    index._count_language_sums()  # what the first centred search after opening adds, timed alone
    recount_s = time.perf_counter() - started
    searches: list[dict[str, Any]] = []
    try:
        for queries, lang in SHAPES:
            q = unit_vectors(queries, DIM, seed=1)
            langs = {lang} if lang else None
            plain = _median_seconds(functools.partial(index.search, q, K, langs))
            centred = _median_seconds(functools.partial(index.search_centred, q, K, langs, LANGS[1]))
            searches.append(
                {
                    "queries": queries,
                    "langs": lang or "all",
                    "plain_ms": round(plain * 1000, 2),
                    "centred_ms": round(centred * 1000, 2),
                    "ratio": round(centred / plain, 3),
                }
            )
    finally:
        index.close()
    return {"size": size, "open_s": round(open_s, 2), "recount_s": round(recount_s, 2), "searches": searches}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Centred / plain time per search shape, one bar per index size (1.0 = no cost)."""
    from benchmarks.load.plot import save_grouped_bars

    groups = [f"{r['queries']} q, {r['langs']}" for r in results[0]["searches"]]
    series = {f"{r['size']:,} vectors": [s["ratio"] for s in r["searches"]] for r in results}
    title = "Cost of a language-centred search (flat index, median of 15; 1.0 = none)"
    save_grouped_bars(groups, series, path, ylabel="centred / plain search time", title=title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("results/load/centring_cost.json"))
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.sizes):
        parser.error("--sizes: every size must be at least 1")
    results = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="xret-centring-") as tmp:
            results.append(measure(size, Path(tmp) / "index"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "centring_cost", "k": K, "results": results}, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
