"""Coalescing of concurrent index searches into one search call per group of like requests.

Each search request brings only one or two query rows, and a flat FAISS search streams the whole
index once per call (per query below FAISS's BLAS threshold). Concurrent requests therefore each
paid for a full scan. The coalescer collects the query rows of concurrent requests, groups them by
a key that fixes everything but the rows (k, language filter, fusion, hubness rescoring), stacks each
group's rows and runs one search per group in a worker thread, then hands every request its own rows'
results, in order. Rows never influence each other in a search, so a request gets what it would have got alone:
bit for bit while FAISS stays on its per-query kernel, and within float rounding (about 1e-7 in a
score) once a group is large enough for FAISS to switch to BLAS, exactly as one request carrying
that many queries already does.

Like the encoder's micro-batcher, it waits at most `max_wait_ms` after the oldest waiting request
and runs at most `concurrency` searches at once; while they run, new requests pile up and form the
next, larger group, so coalescing grows with load without tuning the wait. A group's failure fails
only that group's requests; a cancelled request is dropped (or its rows ignored if already running)
without disturbing the others. A request's rows are never split across groups.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from service.errors import Unavailable
from service.metrics import Metrics

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

MAX_GROUP_ROWS = 1024  # one call's result lists stay small; FAISS blocks BLAS searches by 4096 queries anyway


@dataclass(eq=False)
class _Waiting(Generic[K, R]):
    """One `submit` call: its key, its query rows and the future its results arrive on."""

    key: K
    rows: np.ndarray
    future: asyncio.Future[list[R]]
    arrived: float = field(default=0.0)


class SearchCoalescer(Generic[K, R]):
    """Runs `run_group(key, stacked_rows)` once for the rows of concurrent `submit` calls with equal keys.

    `run_group` is synchronous (it runs in a worker thread) and must return one result per row, in
    row order, each depending on its own row only.
    """

    def __init__(
        self,
        run_group: Callable[[K, np.ndarray], list[R]],
        *,
        max_wait_ms: float,
        concurrency: int = 1,
        max_group_rows: int = MAX_GROUP_ROWS,
        metrics: Metrics | None = None,
        name: str = "search",
    ) -> None:
        if max_wait_ms < 0 or concurrency < 1 or max_group_rows < 1:
            raise ValueError("max_wait_ms must be >= 0, concurrency and max_group_rows >= 1")
        self._run_group = run_group
        self._max_wait_s = max_wait_ms / 1000.0
        self._concurrency = concurrency
        self._max_group_rows = max_group_rows
        self._metrics = metrics
        self._name = name
        self._waiting: list[_Waiting[K, R]] = []
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for a search (not counting those already running)."""
        return len(self._waiting)

    async def start(self) -> None:
        if self._dispatcher is not None:
            return
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self._concurrency)  # a stop may have left a slot taken
        self._executor = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix=self._name)
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())

    async def stop(self) -> None:
        """Refuse waiting requests, let running searches finish (threads cannot be interrupted)."""
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None:
            return
        dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatcher
        waiting, self._waiting = self._waiting, []
        for entry in waiting:
            if not entry.future.done():
                entry.future.set_exception(Unavailable(f"{self._name} is stopping"))
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, key: K, rows: np.ndarray) -> list[R]:
        """Results for `rows` ([n, dim]) under `key`, in row order."""
        if self._dispatcher is None:
            raise Unavailable(f"{self._name} is not running")
        if rows.ndim != 2:
            raise ValueError(f"{self._name}: expected query rows [n, dim], got shape {list(rows.shape)}")
        if not len(rows):
            return []
        loop = asyncio.get_running_loop()
        entry: _Waiting[K, R] = _Waiting(key, rows, loop.create_future(), loop.time())
        self._waiting.append(entry)
        self._arrived.set()
        try:
            return await entry.future
        finally:
            if not entry.future.done():  # cancelled while waiting: it must not be searched
                entry.future.cancel()
            if entry.future.cancelled():
                self._waiting = [e for e in self._waiting if e is not entry]

    async def _dispatch_forever(self) -> None:
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            try:
                group = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            if not group:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    def _group_of_oldest(self) -> tuple[list[int], bool]:
        """Positions of the oldest request and of later ones with its key, within the row cap; and
        whether the cap is reached (then waiting longer cannot make the group larger)."""
        key = self._waiting[0].key
        picked = [0]
        rows = len(self._waiting[0].rows)
        for i in range(1, len(self._waiting)):
            entry = self._waiting[i]
            if entry.key != key:
                continue
            if rows + len(entry.rows) > self._max_group_rows:
                return picked, True
            picked.append(i)
            rows += len(entry.rows)
        return picked, rows >= self._max_group_rows

    async def _collect(self) -> list[_Waiting[K, R]]:
        """Wait (up to max_wait after the oldest request arrived) for like requests, then take them."""
        loop = asyncio.get_running_loop()
        while True:
            self._waiting = [e for e in self._waiting if not e.future.done()]
            if not self._waiting:
                return []
            picked, full = self._group_of_oldest()
            remaining = self._waiting[0].arrived + self._max_wait_s - loop.time()
            if full or remaining <= 0:
                taken = set(picked)
                group = [self._waiting[i] for i in picked]
                self._waiting = [e for i, e in enumerate(self._waiting) if i not in taken]
                return group
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # a builtin alias only from 3.11
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def _run(self, group: list[_Waiting[K, R]]) -> None:
        try:
            stacked = np.concatenate([e.rows for e in group]) if len(group) > 1 else group[0].rows
            if self._metrics is not None:
                self._metrics.search_batch_queries.observe(len(stacked))
                self._metrics.search_batch_requests.observe(len(group))
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(self._executor, self._run_group, group[0].key, stacked)
                if len(results) != len(stacked):
                    raise RuntimeError(f"{self._name}: {len(results)} results for {len(stacked)} query rows")
            except Exception as exc:
                for entry in group:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
                return
            start = 0
            for entry in group:
                end = start + len(entry.rows)
                if not entry.future.done():  # a request cancelled while its group ran just misses out
                    entry.future.set_result(results[start:end])
                start = end
        finally:
            self._slots.release()
