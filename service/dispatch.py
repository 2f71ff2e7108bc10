"""The dispatch loop shared by the encoder's micro-batcher and the search coalescer.

Both turn concurrent requests into fewer, larger synchronous calls the same way: waiting entries pile
up, a dispatcher takes a group when it is full or when the oldest entry has waited `max_wait_ms`, at
most `concurrency` groups run at once (one worker thread each) and, while they run, new entries form
the next, larger group, so grouping grows with load without tuning the wait. What differs (how a group
is picked, what a group's call returns, how results reach the callers) is left to subclasses.

When a group's call returns, the next due group starts on the same slot *before* the results are
handed out: delivering wakes every caller of the group, and their response work (serialising, sending)
could otherwise run on the event loop while the worker sits idle. On 2 cores at 32 one-text clients
this measured no different (the event loop was idle most of the time, PERFORMANCE.md); it stays because
it removes that gap by construction on machines where the loop is busier.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from service.errors import Unavailable


class Waiting(Protocol):
    """What the loop reads of an entry: when it arrived (event-loop clock)."""

    arrived: float


E = TypeVar("E", bound=Waiting)
V = TypeVar("V")


class GroupDispatcher(Generic[E]):
    """Owns the waiting list, the dispatcher task, the concurrency slots and the worker threads."""

    def __init__(self, *, max_wait_ms: float, concurrency: int, name: str) -> None:
        self._max_wait_s = max_wait_ms / 1000.0
        self._concurrency = concurrency
        self._name = name
        self._waiting: list[E] = []
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)  # renewed by start(): a stop may leave a slot taken
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    # --- what subclasses define ----------------------------------------------------------------------------

    def _is_live(self, entry: E) -> bool:
        """False for an entry whose caller has gone (cancelled or failed): it is dropped unrun."""
        raise NotImplementedError

    def _pick(self) -> tuple[list[int], bool]:
        """Positions in `_waiting` of the next group (the oldest entry always among them), and whether
        the group is full (then waiting longer cannot make it larger)."""
        raise NotImplementedError

    async def _compute(self, group: list[E]) -> Any:
        """Run one group's call (on a worker, see `_in_worker`) and return its results; may raise."""
        raise NotImplementedError

    def _deliver(self, group: list[E], outcome: Any) -> None:
        """Hand `_compute`'s results, or the Exception it raised, to the group's callers."""
        raise NotImplementedError

    def _refuse(self, entry: E, exc: BaseException) -> None:
        """Fail a waiting entry's caller (at stop)."""
        raise NotImplementedError

    def _changed(self) -> None:
        """Hook after the waiting list changed (queue-depth metrics)."""

    # --- the loop --------------------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Entries waiting (not counting those already running)."""
        return len(self._waiting)

    def _require_running(self) -> None:
        if self._dispatcher is None:
            raise Unavailable(f"{self._name} is not running")

    async def start(self) -> None:
        if self._dispatcher is not None:
            return
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self._concurrency)
        self._executor = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix=self._name)
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())

    async def stop(self) -> None:
        """Refuse waiting entries, let running groups finish (threads cannot be interrupted)."""
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None:
            return
        dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatcher
        waiting, self._waiting = self._waiting, []
        for entry in waiting:
            self._refuse(entry, Unavailable(f"{self._name} is stopping"))
        self._changed()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _enqueue(self, entries: list[E]) -> None:
        self._waiting.extend(entries)
        self._changed()
        self._arrived.set()

    async def _in_worker(self, function: Callable[..., V], *args: Any) -> V:
        """Run a synchronous group call on one of the worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

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
            self._launch(group)

    def _take_due(self) -> tuple[list[E], float | None]:
        """(the next group, 0) when one is due (full, or its oldest entry waited max_wait); else ([], seconds
        until the oldest entry's wait is over), or ([], None) when nothing live is waiting."""
        self._waiting = [e for e in self._waiting if self._is_live(e)]
        self._changed()
        if not self._waiting:
            return [], None
        picked, full = self._pick()
        remaining = self._waiting[0].arrived + self._max_wait_s - asyncio.get_running_loop().time()
        if not full and remaining > 0:
            return [], remaining
        taken = set(picked)
        group = [self._waiting[i] for i in picked]
        self._waiting = [e for i, e in enumerate(self._waiting) if i not in taken]
        self._changed()
        return group, 0.0

    async def _collect(self) -> list[E]:
        """Wait (up to max_wait after the oldest entry arrived) until a group is full, then take it."""
        while True:
            group, remaining = self._take_due()
            if group or remaining is None:
                return group
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # a builtin alias only from 3.11
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _launch(self, group: list[E]) -> None:
        """Run `group` on a slot the caller holds; the task gives the slot back (or hands it on) at its end."""
        task = asyncio.get_running_loop().create_task(self._run_then_release(group))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _run_then_release(self, group: list[E]) -> None:
        handed_on = False
        try:
            try:
                outcome = await self._compute(group)
            except Exception as exc:
                outcome = exc
            handed_on = self._hand_on()
            self._deliver(group, outcome)
        finally:
            if not handed_on:
                self._slots.release()

    def _hand_on(self) -> bool:
        """Start the next due group on this slot now (see the module docstring); False when none is due."""
        if self._dispatcher is None:  # stopping: waiting entries are being refused
            return False
        group, _ = self._take_due()
        if not group:
            return False
        self._launch(group)
        return True
