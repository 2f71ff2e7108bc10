"""Micro-batching across concurrent requests.

Encoders are far cheaper per text in a batch than one text at a time, but requests arrive one by
one. The batcher collects the texts of concurrent requests, groups texts of similar length (so the
padding to the longest text in a batch wastes little work), caps each batch by a padded-token
budget, and runs it in a worker thread so the event loop keeps serving. The queue is bounded and
says no at once (`Overloaded`) instead of letting latency grow without limit. It knows nothing
about models: items, a cost per item and a synchronous `run_batch` are all it sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.dispatch import GroupDispatcher
from service.errors import Overloaded
from service.metrics import Metrics

T = TypeVar("T")
R = TypeVar("R")


def plan_batch(costs: list[int], max_batch_cost: int, max_batch_size: int) -> list[int]:
    """Indices of the next batch among waiting items (`costs` in arrival order).

    The oldest item (index 0) is always in the batch, so no item starves behind a stream of
    shorter ones. Around it the batch grows through the cost-sorted items, each step taking the
    neighbour whose cost is closest to the oldest item's, while `n * max cost` (the padded tokens
    the encoder will really process) stays within the budget. An item over the budget alone
    still runs, alone.
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    anchor_cost = costs[0]
    lo = order.index(0)
    hi = lo + 1  # the batch is order[lo:hi]
    while hi - lo < max_batch_size:
        n = hi - lo + 1
        left_fits = lo > 0 and n * costs[order[hi - 1]] <= max_batch_cost
        right_fits = hi < len(order) and n * costs[order[hi]] <= max_batch_cost
        if left_fits and (not right_fits or anchor_cost - costs[order[lo - 1]] <= costs[order[hi]] - anchor_cost):
            lo -= 1
        elif right_fits:
            hi += 1
        else:
            break
    return order[lo:hi]


@dataclass(eq=False)
class _Request(Generic[R]):
    """One `submit` call: its results fill in as its items' batches finish, in any order."""

    future: asyncio.Future[list[R]]
    results: list[R | None]
    remaining: int

    def deliver(self, index: int, result: R) -> None:
        if self.future.done():  # cancelled, or failed in another batch
            return
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(self.results)  # type: ignore[arg-type]  # all filled now

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False)
class _Entry(Generic[T, R]):
    item: T
    cost: int
    index: int
    request: _Request[R]
    arrived: float = field(default=0.0)


class MicroBatcher(GroupDispatcher[_Entry[T, R]], Generic[T, R]):
    """Groups items of concurrent `submit` calls into batches for a synchronous `run_batch`.

    `concurrency` batches may run at once (one thread each); while they run, new items pile up
    and form the next, larger batch, so batching adapts to load without tuning `max_wait_ms`.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        cost: Callable[[T], int],
        *,
        max_batch_cost: int,
        max_batch_size: int,
        max_wait_ms: float,
        queue_size: int,
        metrics: Metrics | None = None,
        concurrency: int = 1,
        name: str = "batcher",
    ) -> None:
        if max_batch_cost < 1 or max_batch_size < 1 or queue_size < 1 or concurrency < 1 or max_wait_ms < 0:
            raise ValueError(
                "max_batch_cost, max_batch_size, queue_size and concurrency must be >= 1, max_wait_ms >= 0"
            )
        super().__init__(max_wait_ms=max_wait_ms, concurrency=concurrency, name=name)
        self._run_batch = run_batch
        self._cost = cost
        self._max_batch_cost = max_batch_cost
        self._max_batch_size = max_batch_size
        self._queue_size = queue_size
        self._metrics = metrics

    async def submit(self, items: list[T]) -> list[R]:
        """Results for `items`, in their order; `Overloaded` at once when the queue has no room."""
        self._require_running()
        if not items:
            return []
        if len(self._waiting) + len(items) > self._queue_size:
            if self._metrics is not None:
                self._metrics.rejected.inc(len(items))
            raise Overloaded(
                f"encoder queue full: {len(self._waiting)} texts waiting, {len(items)} more would exceed "
                f"the limit of {self._queue_size}; retry later"
            )
        loop = asyncio.get_running_loop()
        request: _Request[R] = _Request(future=loop.create_future(), results=[None] * len(items), remaining=len(items))
        now = loop.time()
        self._enqueue(
            [
                _Entry(item=item, cost=self._cost(item), index=i, request=request, arrived=now)
                for i, item in enumerate(items)
            ]
        )
        try:
            return await request.future
        finally:
            if not request.future.done() or request.future.cancelled() or request.future.exception():
                self._drop(request)

    def _drop(self, request: _Request[R]) -> None:
        """Forget a failed or cancelled request's waiting items: they must not run nor hold queue room."""
        self._waiting = [e for e in self._waiting if e.request is not request]
        self._changed()

    def _changed(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._waiting))

    def _is_live(self, entry: _Entry[T, R]) -> bool:
        return not entry.request.future.done()

    def _refuse(self, entry: _Entry[T, R], exc: BaseException) -> None:
        entry.request.fail(exc)

    def _pick(self) -> tuple[list[int], bool]:
        picked = plan_batch([e.cost for e in self._waiting], self._max_batch_cost, self._max_batch_size)
        return picked, len(picked) == self._max_batch_size or len(picked) < len(self._waiting)

    async def _compute(self, batch: list[_Entry[T, R]]) -> list[R]:
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(batch))
            self._metrics.batch_tokens.observe(len(batch) * max(e.cost for e in batch))
        started = time.perf_counter()
        results = await self._in_worker(self._run_batch, [e.item for e in batch])
        if self._metrics is not None:
            self._metrics.batch_seconds.observe(time.perf_counter() - started)
        if len(results) != len(batch):
            raise RuntimeError(f"{self._name}: run_batch returned {len(results)} results for {len(batch)} items")
        return results

    def _deliver(self, batch: list[_Entry[T, R]], outcome: list[R] | Exception) -> None:
        if isinstance(outcome, Exception):
            for entry in batch:
                entry.request.fail(outcome)
            return
        for entry, result in zip(batch, outcome, strict=True):
            entry.request.deliver(entry.index, result)
