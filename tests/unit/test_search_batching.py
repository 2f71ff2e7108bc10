"""SearchCoalescer: one search per key for concurrent requests, split back in order; failures and
cancellation stay with their own requests; and through the Engine on a real FAISS index, coalesced
searches answer exactly what the same searches answer one at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.config import Settings
from service.engine import Engine
from service.errors import Unavailable
from service.fusion import FusionOverride
from service.index import Hit, Sentence
from service.metrics import Metrics
from service.search_batching import SearchCoalescer


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=60))


class Searcher:
    """A run_group that answers each row with (key, row id) and records every call; can be held shut."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, key: str, rows: np.ndarray) -> list[tuple[str, int]]:
        ids = [int(r) for r in rows[:, 0]]
        self.calls.append((key, ids))
        self.started.set()
        assert self.gate.wait(10)
        if key == "boom":
            raise ValueError("boom group")
        return [(key, i) for i in ids]


def rows(*ids: int) -> np.ndarray:
    return np.asarray([[i, 0.0] for i in ids], dtype=np.float32)


def make(searcher: Searcher, **options: Any) -> SearchCoalescer[str, tuple[str, int]]:
    options.setdefault("max_wait_ms", 50)
    return SearchCoalescer(searcher, **options)


def test_concurrent_requests_share_one_search_per_key_and_get_their_own_rows() -> None:
    async def main() -> None:
        searcher = Searcher()
        metrics = Metrics()
        coalescer = make(searcher, metrics=metrics)
        await coalescer.start()
        requests = [("a", rows(1, 2)), ("b", rows(3)), ("a", rows(4)), ("b", rows(5, 6)), ("a", rows(7))]
        results = await asyncio.gather(*(coalescer.submit(key, r) for key, r in requests))
        await coalescer.stop()
        assert results == [
            [("a", 1), ("a", 2)],
            [("b", 3)],
            [("a", 4)],
            [("b", 5), ("b", 6)],
            [("a", 7)],
        ]
        assert sorted(searcher.calls) == [("a", [1, 2, 4, 7]), ("b", [3, 5, 6])]
        calls = metrics.registry.get_sample_value("xret_search_batch_queries_count")
        queries = metrics.registry.get_sample_value("xret_search_batch_queries_sum")
        served = metrics.registry.get_sample_value("xret_search_batch_requests_sum")
        assert (calls, queries, served) == (2, 7, 5)

    run(main())


def test_a_failing_group_fails_only_its_own_requests() -> None:
    async def main() -> None:
        searcher = Searcher()
        coalescer = make(searcher)
        await coalescer.start()
        outcomes = await asyncio.gather(
            coalescer.submit("boom", rows(1)),
            coalescer.submit("a", rows(2)),
            coalescer.submit("boom", rows(3)),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], ValueError) and isinstance(outcomes[2], ValueError)
        assert outcomes[1] == [("a", 2)]
        assert await coalescer.submit("a", rows(9)) == [("a", 9)]  # still serving
        await coalescer.stop()

    run(main())


def test_cancelled_waiting_request_is_not_searched_and_others_are_answered() -> None:
    async def main() -> None:
        searcher = Searcher()
        coalescer = make(searcher, max_wait_ms=0, concurrency=1)
        await coalescer.start()
        searcher.gate.clear()
        first = asyncio.ensure_future(coalescer.submit("a", rows(1)))
        await asyncio.to_thread(searcher.started.wait, 5)  # its search holds the only slot
        gone = asyncio.ensure_future(coalescer.submit("a", rows(2)))
        kept = asyncio.ensure_future(coalescer.submit("a", rows(3)))
        await asyncio.sleep(0.01)
        gone.cancel()
        searcher.gate.set()
        assert await first == [("a", 1)]
        assert await kept == [("a", 3)]
        assert gone.cancelled()
        assert searcher.calls == [("a", [1]), ("a", [3])]
        await coalescer.stop()

    run(main())


def test_cancelling_a_request_whose_search_runs_leaves_the_rest_of_its_group_answered() -> None:
    async def main() -> None:
        searcher = Searcher()
        coalescer = make(searcher, max_wait_ms=20)
        await coalescer.start()
        searcher.gate.clear()
        gone = asyncio.ensure_future(coalescer.submit("a", rows(1)))
        kept = asyncio.ensure_future(coalescer.submit("a", rows(2, 3)))
        await asyncio.to_thread(searcher.started.wait, 5)
        gone.cancel()
        searcher.gate.set()
        assert await kept == [("a", 2), ("a", 3)]
        assert gone.cancelled()
        assert searcher.calls == [("a", [1, 2, 3])]
        await coalescer.stop()

    run(main())


def test_row_cap_splits_groups_but_never_a_request() -> None:
    async def main() -> None:
        searcher = Searcher()
        coalescer = make(searcher, max_group_rows=3)
        await coalescer.start()
        results = await asyncio.gather(
            coalescer.submit("a", rows(1, 2)),
            coalescer.submit("a", rows(3, 4)),
            coalescer.submit("a", rows(5, 6, 7, 8)),
        )
        await coalescer.stop()
        assert results == [[("a", 1), ("a", 2)], [("a", 3), ("a", 4)], [("a", i) for i in (5, 6, 7, 8)]]
        assert searcher.calls == [("a", [1, 2]), ("a", [3, 4]), ("a", [5, 6, 7, 8])]

    run(main())


def test_stop_refuses_waiting_and_later_requests() -> None:
    async def main() -> None:
        searcher = Searcher()
        coalescer = make(searcher, max_wait_ms=10_000)
        await coalescer.start()
        waiting = asyncio.ensure_future(coalescer.submit("a", rows(1)))
        await asyncio.sleep(0.01)
        await coalescer.stop()
        with pytest.raises(Unavailable):
            await waiting
        with pytest.raises(Unavailable):
            await coalescer.submit("a", rows(2))
        assert searcher.calls == []

    run(main())


# ------------------------------------------------------------------ through the engine, real FAISS
CORPUS = [
    ("The cat sleeps on the warm sofa.", "en"),
    ("Die Katze schläft auf dem warmen Sofa.", "de"),
    ("Le chat dort sur le canapé chaud.", "fr"),
    ("I am going to the train station tomorrow.", "en"),
    ("Ich fahre morgen zum Bahnhof.", "de"),
    ("Je vais à la gare demain.", "fr"),
    ("It is raining in the mountains.", "en"),
    ("Es regnet in den Bergen.", "de"),
    ("Il pleut dans les montagnes.", "fr"),
    ("The soup needs more salt.", "en"),
    ("Die Suppe braucht mehr Salz.", "de"),
    ("La soupe a besoin de plus de sel.", "fr"),
]
Spec = tuple[list[str], int, list[str] | None, FusionOverride | None]
SPECS: list[Spec] = [
    (["Die Katze schläft."], 5, None, None),
    (["Where is the station?", "Il pleut."], 5, None, None),
    (["The soup is salty."], 5, None, None),
    (["Le chat."], 3, None, None),
    (["Es regnet."], 5, ["fr"], None),
    (["Rain in the hills.", "Die Suppe."], 5, ["fr"], None),
    (["Bahnhof morgen."], 5, ["de", "en"], None),
    (["Die Katze schläft."], 4, None, FusionOverride(method="rrf")),
    (["Where is the station?"], 4, None, FusionOverride(method="rrf")),
    (["Le chat dort."], 4, ["en"], FusionOverride(method="rrf")),
    (["The cat."], 5, None, FusionOverride(method="score_sum", weights=[1, 0])),
    (["Mountains and rain."], 5, None, FusionOverride(method="score_sum", weights=[1, 0])),
    (["Salz."], 5, None, FusionOverride(method="score_sum", weights=[0.2, 0.8])),
]


def engine_run(tiny_repo: Path, index: Path, body: Callable[[Engine], Coroutine[Any, Any, None]], **opts: Any) -> None:
    async def main() -> None:
        engine = Engine(
            Settings(repo=tiny_repo, index=index, redis_url=None, snapshot_interval_s=0, intra_op_threads=1, **opts)
        )
        await engine.start()
        try:
            await body(engine)
        finally:
            await engine.stop()

    run(main())


async def add_corpus(engine: Engine) -> None:
    await engine.add_sentences([Sentence(f"s{i}", text, lang) for i, (text, lang) in enumerate(CORPUS)])


def search_calls(engine: Engine) -> float:
    return engine.metrics.registry.get_sample_value("xret_search_batch_queries_count") or 0.0


def test_coalesced_engine_searches_equal_the_same_searches_one_at_a_time(tiny_repo: Path, tmp_path: Path) -> None:
    alone: list[list[list[Hit]]] = []

    async def one_at_a_time(engine: Engine) -> None:
        await add_corpus(engine)
        alone.extend([await engine.search(q, k, langs, fusion) for q, k, langs, fusion in SPECS])
        assert search_calls(engine) == len(SPECS)  # one search each
        assert all(len(hits) > 0 for result in alone for hits in result)

    async def concurrently(engine: Engine) -> None:
        together = await asyncio.gather(*(engine.search(q, k, langs, fusion) for q, k, langs, fusion in SPECS))
        assert together == alone  # ids, texts, languages and scores, bit for bit, in order
        keys = {(k, tuple(sorted(langs or [])), engine.fusion_for(fusion)) for _, k, langs, fusion in SPECS}
        assert len(keys) < len(SPECS)
        assert search_calls(engine) == len(keys)  # one search per distinct (k, langs, fusion)
        served = engine.metrics.registry.get_sample_value("xret_search_batch_requests_sum")
        assert served == len(SPECS)

    # Same index folder, reopened. Texts are encoded one per batch, so both rounds search with bit-identical
    # query vectors (encoder batching is not under test); the second engine's long window lets every
    # request reach the coalescer before any search runs.
    index = tmp_path / "index"
    engine_run(tiny_repo, index, one_at_a_time, search_max_wait_ms=0, cache_size=0, max_batch_size=1)
    engine_run(tiny_repo, index, concurrently, search_max_wait_ms=2000, cache_size=0, max_batch_size=1)


def test_cached_results_skip_the_search_as_before(tiny_repo: Path, tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await add_corpus(engine)
        first = await asyncio.gather(*(engine.search(q, k, langs, fusion) for q, k, langs, fusion in SPECS))
        calls = search_calls(engine)
        assert calls > 0
        again = await asyncio.gather(*(engine.search(q, k, langs, fusion) for q, k, langs, fusion in SPECS))
        assert again == first
        assert search_calls(engine) == calls  # every result came from the per-request cache
        hits = engine.metrics.registry.get_sample_value("xret_cache_total", {"kind": "result", "result": "hit"})
        assert hits == sum(len(q) for q, *_ in SPECS)

    engine_run(tiny_repo, tmp_path / "index", body, search_max_wait_ms=5)
