"""MicroBatcher: grouping, order, token budget, overload, cancellation, failures, concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from service.batching import MicroBatcher, plan_batch
from service.errors import Overloaded, Unavailable
from service.metrics import Metrics


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=20))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


class Recorder:
    """A run_batch that uppercases strings, records every batch, and can be held to fill the queue."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.started.set()
        assert self.gate.wait(10)
        time.sleep(self.delay_s)
        if "boom" in items:
            raise ValueError("boom in batch")
        return [s.upper() for s in items]

    @property
    def seen(self) -> list[str]:
        return [s for batch in self.batches for s in batch]


def make(recorder: Recorder, **overrides: Any) -> MicroBatcher[str, str]:
    options: dict[str, Any] = dict(max_batch_cost=1000, max_batch_size=64, max_wait_ms=5, queue_size=100)
    options.update(overrides)
    return MicroBatcher(recorder, len, **options)


def test_plan_batch_keeps_oldest_and_groups_similar_costs() -> None:
    costs = [10, 2, 11, 3, 9, 50, 12]
    picked = plan_batch(costs, max_batch_cost=40, max_batch_size=8)
    assert 0 in picked
    assert sorted(costs[i] for i in picked) == [9, 10, 11]  # 4 * 12 = 48 > 40 stops it
    assert plan_batch([500, 1, 1], max_batch_cost=100, max_batch_size=8) == [0]  # over budget runs alone
    assert len(plan_batch([5] * 10, max_batch_cost=1000, max_batch_size=4)) == 4


def test_concurrent_submissions_share_batches_and_keep_order() -> None:
    recorder = Recorder(delay_s=0.02)

    async def main() -> None:
        batcher = make(recorder, max_wait_ms=20)
        await batcher.start()
        texts = [[f"t{i}-" + "x" * (i % 7), f"u{i}"] for i in range(30)]
        results = await asyncio.gather(*(batcher.submit(t) for t in texts))
        await batcher.stop()
        assert results == [[s.upper() for s in t] for t in texts]
        assert sorted(recorder.seen) == sorted(s for t in texts for s in t)

    run(main())
    assert len(recorder.batches) < 10  # 60 texts from 30 requests


def test_token_budget_respected_and_batches_sorted_by_length() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        batcher = make(recorder, max_batch_cost=60, max_wait_ms=0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(["hold"]))
        await asyncio.to_thread(recorder.started.wait, 5)
        texts = ["a" * n for n in (3, 20, 4, 19, 5, 18, 80, 6)]
        pending = asyncio.ensure_future(batcher.submit(texts))
        await wait_until(lambda: batcher.queued == len(texts))
        recorder.gate.set()
        assert await pending == [t.upper() for t in texts]
        assert await first == ["HOLD"]
        await batcher.stop()

    run(main())
    for batch in recorder.batches[1:]:
        lengths = [len(s) for s in batch]
        assert len(batch) == 1 or len(batch) * max(lengths) <= 60, lengths
        assert lengths == sorted(lengths)
    assert ["a" * 80] in recorder.batches  # above the budget, still runs, alone
    assert sorted(len(s) for s in recorder.batches[1]) == [3, 4, 5, 6]  # similar lengths together


def test_overload_rejects_at_once_and_recovers() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()

    async def main() -> None:
        batcher = make(recorder, queue_size=4, max_wait_ms=0, metrics=metrics)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.to_thread(recorder.started.wait, 5)
        queued = asyncio.ensure_future(batcher.submit(["b", "c", "d"]))
        await wait_until(lambda: batcher.queued == 3)
        with pytest.raises(Overloaded, match="limit of 4"):
            await batcher.submit(["e", "f"])
        assert metrics.registry.get_sample_value("xret_rejected_total") == 2
        assert metrics.registry.get_sample_value("xret_queue_texts") == 3
        recorder.gate.set()
        assert await first == ["A"]
        assert await queued == ["B", "C", "D"]
        assert await batcher.submit(["e", "f"]) == ["E", "F"]
        await batcher.stop()

    run(main())
    assert metrics.registry.get_sample_value("xret_batch_texts_count") == len(recorder.batches)
    assert metrics.registry.get_sample_value("xret_batch_texts_sum") == 6
    assert metrics.registry.get_sample_value("xret_queue_texts") == 0


def test_busy_time_is_the_time_batches_ran() -> None:
    """xret_batch_seconds sums each batch's run in its worker: the encoder's busy time, what a load test
    divides by its duration to tell an encoder that waited for work from one that never stopped."""
    recorder = Recorder(delay_s=0.05)
    metrics = Metrics()

    async def main() -> None:
        batcher = make(recorder, max_wait_ms=0, metrics=metrics)
        await batcher.start()
        for text in ("a", "b", "c"):
            await batcher.submit([text])
        await asyncio.sleep(0.1)  # idle: not counted
        await batcher.stop()

    run(main())
    assert metrics.registry.get_sample_value("xret_batch_seconds_count") == 3
    busy = metrics.registry.get_sample_value("xret_batch_seconds_sum")
    assert busy is not None and 0.15 <= busy < 0.3


def test_cancelled_request_items_are_not_run_and_free_the_queue() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        batcher = make(recorder, queue_size=3, max_wait_ms=0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.to_thread(recorder.started.wait, 5)
        doomed = asyncio.ensure_future(batcher.submit(["gone1", "gone2", "gone3"]))
        await wait_until(lambda: batcher.queued == 3)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert batcher.queued == 0
        kept = asyncio.ensure_future(batcher.submit(["b"]))
        recorder.gate.set()
        assert await kept == ["B"]
        assert await first == ["A"]
        await batcher.stop()

    run(main())
    assert not any(s.startswith("gone") for s in recorder.seen)


def test_exception_reaches_every_request_of_the_batch_and_batcher_survives() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        batcher = make(recorder, max_wait_ms=0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.to_thread(recorder.started.wait, 5)
        a = asyncio.ensure_future(batcher.submit(["boom"]))
        b = asyncio.ensure_future(batcher.submit(["ok"]))
        await wait_until(lambda: batcher.queued == 2)
        recorder.gate.set()
        assert await first == ["A"]
        errors = await asyncio.gather(a, b, return_exceptions=True)
        assert isinstance(errors[0], ValueError)
        assert errors[0] is errors[1]
        assert await batcher.submit(["again"]) == ["AGAIN"]
        await batcher.stop()

    run(main())


def test_concurrency_runs_batches_in_parallel_threads() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def run_batch(items: list[str]) -> list[str]:
        barrier.wait()  # breaks (raises) unless two batches run at the same time
        return items

    async def main() -> None:
        batcher: MicroBatcher[str, str] = MicroBatcher(
            run_batch, len, max_batch_cost=100, max_batch_size=1, max_wait_ms=0, queue_size=10, concurrency=2
        )
        await batcher.start()
        assert await asyncio.gather(batcher.submit(["x"]), batcher.submit(["y"])) == [["x"], ["y"]]
        await batcher.stop()

    run(main())


def test_not_running_and_stopping_answer_unavailable() -> None:
    recorder = Recorder()
    recorder.gate.clear()

    async def main() -> None:
        batcher = make(recorder, max_wait_ms=0)
        with pytest.raises(Unavailable):
            await batcher.submit(["a"])
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.to_thread(recorder.started.wait, 5)
        waiting = asyncio.ensure_future(batcher.submit(["b"]))
        await wait_until(lambda: batcher.queued == 1)
        stopping = asyncio.ensure_future(batcher.stop())
        with pytest.raises(Unavailable, match="stopping"):
            await waiting
        recorder.gate.set()
        await stopping
        assert await first == ["A"]  # the running batch was allowed to finish
        with pytest.raises(Unavailable):
            await batcher.submit(["c"])

    run(main())


def test_next_batch_starts_on_the_slot_before_results_are_delivered() -> None:
    """The worker must not idle while the event loop hands a finished batch's results to its callers."""
    recorder = Recorder()

    async def main() -> None:
        batcher = make(recorder, max_wait_ms=0)
        await batcher.start()
        recorder.gate.clear()

        async def first_caller() -> tuple[list[str], int]:
            out = await batcher.submit(["a"])
            return out, batcher.queued  # read in the very step the result arrives in

        first = asyncio.create_task(first_caller())
        await wait_until(recorder.started.is_set)
        second = asyncio.create_task(batcher.submit(["b"]))
        await wait_until(lambda: batcher.queued == 1)
        recorder.gate.set()
        # when the first caller resumes, "b" has already left the queue for the worker: the dispatcher
        # would only have taken it in a later loop iteration, after the first slot was given back
        assert await first == (["A"], 0)
        assert await second == ["B"]
        assert recorder.batches == [["a"], ["b"]]
        await batcher.stop()

    run(main())
