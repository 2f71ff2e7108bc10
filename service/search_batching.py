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

Like the encoder's micro-batcher (both run service.dispatch's loop), it waits at most
`max_wait_ms` after the oldest waiting request and runs at most `concurrency` searches at once;
while they run, new requests pile up and form the next, larger group, so coalescing grows with load
without tuning the wait. A group's failure fails only that group's requests; a cancelled request is
dropped (or its rows ignored if already running) without disturbing the others. A request's rows are
never split across groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from service.dispatch import GroupDispatcher
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


class SearchCoalescer(GroupDispatcher[_Waiting[K, R]], Generic[K, R]):
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
        super().__init__(max_wait_ms=max_wait_ms, concurrency=concurrency, name=name)
        self._run_group = run_group
        self._max_group_rows = max_group_rows
        self._metrics = metrics

    async def submit(self, key: K, rows: np.ndarray) -> list[R]:
        """Results for `rows` ([n, dim]) under `key`, in row order."""
        self._require_running()
        if rows.ndim != 2:
            raise ValueError(f"{self._name}: expected query rows [n, dim], got shape {list(rows.shape)}")
        if not len(rows):
            return []
        loop = asyncio.get_running_loop()
        entry: _Waiting[K, R] = _Waiting(key, rows, loop.create_future(), loop.time())
        self._enqueue([entry])
        try:
            return await entry.future
        finally:
            if not entry.future.done():  # cancelled while waiting: it must not be searched
                entry.future.cancel()
            if entry.future.cancelled():
                self._waiting = [e for e in self._waiting if e is not entry]

    def _is_live(self, entry: _Waiting[K, R]) -> bool:
        return not entry.future.done()

    def _refuse(self, entry: _Waiting[K, R], exc: BaseException) -> None:
        if not entry.future.done():
            entry.future.set_exception(exc)

    def _pick(self) -> tuple[list[int], bool]:
        """The oldest request and later ones with its key, within the row cap; full once the cap is reached."""
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

    async def _compute(self, group: list[_Waiting[K, R]]) -> list[R]:
        stacked = np.concatenate([e.rows for e in group]) if len(group) > 1 else group[0].rows
        if self._metrics is not None:
            self._metrics.search_batch_queries.observe(len(stacked))
            self._metrics.search_batch_requests.observe(len(group))
        results = await self._in_worker(self._run_group, group[0].key, stacked)
        if len(results) != len(stacked):
            raise RuntimeError(f"{self._name}: {len(results)} results for {len(stacked)} query rows")
        return results

    def _deliver(self, group: list[_Waiting[K, R]], outcome: list[R] | Exception) -> None:
        if isinstance(outcome, Exception):
            for entry in group:
                if not entry.future.done():
                    entry.future.set_exception(outcome)
            return
        start = 0
        for entry in group:
            end = start + len(entry.rows)
            if not entry.future.done():  # a request cancelled while its group ran just misses out
                entry.future.set_result(outcome[start:end])
            start = end
