"""Closed-loop and open-loop load against one target, with warm-up and hard bounds.

Closed loop: N clients each send, wait for the answer, send again. It finds the throughput a
system sustains at a given concurrency, but a slow server also slows the arrivals, so it cannot
show queueing. Open loop: requests are due at planned times (constant spacing or a Poisson
process) whatever the server does; latency counts from the planned time, so a server that falls
behind shows it as growing latency instead of silently receiving fewer requests.

Every phase is bounded by a duration and a request count, every request by the target's timeout,
and open loop by `max_in_flight` (beyond it a due request is recorded as `client_overflow`
instead of piling up sockets), so no run can grow without limit.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

from benchmarks.load.server_metrics import watch_metrics
from benchmarks.load.stats import Sample, summarize
from benchmarks.load.targets import Target, error_kind
from benchmarks.load.texts import TextStream

Arrival = Literal["poisson", "constant"]
Mode = Literal["closed", "open"]
START_LEAD_S = 0.005  # the first open-loop send is planned this far ahead, so it is not already late


@dataclass
class LoadSpec:
    """How to load a target; `concurrency` for closed loop, `rate` (requests/s) for open loop."""

    mode: Mode = "closed"
    concurrency: int = 1
    rate: float = 0.0
    arrival: Arrival = "poisson"
    duration_s: float = 10.0
    max_requests: int = 100_000
    warmup_s: float = 2.0
    max_in_flight: int = 1024
    seed: int = 0

    def check(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode must be closed or open, got {self.mode!r}")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError(f"closed loop needs concurrency >= 1, got {self.concurrency}")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError(f"open loop needs a rate > 0 requests/s, got {self.rate}")
        if self.arrival not in ("poisson", "constant"):
            raise ValueError(f"arrival must be poisson or constant, got {self.arrival!r}")
        if self.duration_s <= 0 or self.max_requests < 1 or self.warmup_s < 0 or self.max_in_flight < 1:
            raise ValueError("duration must be > 0, max_requests and max_in_flight >= 1, warm-up >= 0")


def arrival_offsets(rate: float, duration_s: float, max_requests: int, arrival: Arrival, seed: int) -> list[float]:
    """Planned send times (seconds from the phase start), at most `max_requests`, all < duration."""
    rng = random.Random(seed)
    offsets: list[float] = []
    t = 0.0
    for i in range(max_requests):
        t = i / rate if arrival == "constant" else t + rng.expovariate(rate)
        if t >= duration_s:
            break
        offsets.append(t)
    return offsets


async def _timed_call(target: Target, texts: list[str], scheduled: float) -> Sample:
    loop = asyncio.get_running_loop()
    started = loop.time()
    error = None
    try:
        await target.call(texts)
    except Exception as exc:  # every failure is a row of the error table, never a crash of the run
        error = error_kind(exc)
    return Sample(scheduled, started, loop.time(), len(texts), error)


async def closed_phase(
    target: Target, stream: TextStream, concurrency: int, duration_s: float, max_requests: int
) -> tuple[list[Sample], float]:
    """`concurrency` clients back to back until the duration or the request budget runs out."""
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    t0 = loop.time()
    deadline = t0 + duration_s
    budget = max_requests

    async def client() -> None:
        nonlocal budget
        while budget > 0 and loop.time() < deadline:
            budget -= 1
            samples.append(await _timed_call(target, stream.take(), loop.time()))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples, loop.time() - t0


async def open_phase(
    target: Target, stream: TextStream, offsets: list[float], max_in_flight: int
) -> tuple[list[Sample], float]:
    """Send at the planned offsets regardless of answers; late answers show as latency."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + START_LEAD_S
    in_flight: set[asyncio.Task[Sample]] = set()
    done: list[asyncio.Task[Sample]] = []
    samples: list[Sample] = []
    for offset in offsets:
        due = t0 + offset
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            samples.append(Sample(due, loop.time(), loop.time(), stream.per_request, "client_overflow"))
            continue
        task = asyncio.create_task(_timed_call(target, stream.take(), due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        done.append(task)
    samples.extend(await asyncio.gather(*done))
    return samples, loop.time() - t0


async def run_load(
    target: Target, stream: TextStream, spec: LoadSpec, metrics_url: str | None = None
) -> dict[str, Any]:
    """Warm up, then measure one phase; the result is one JSON-ready record of the run."""
    spec.check()
    await target.open()
    try:
        if spec.warmup_s > 0:
            await _phase(target, stream, spec, spec.warmup_s, seed=spec.seed + 1)
        async with watch_metrics(metrics_url) as watch:
            samples, elapsed = await _phase(target, stream, spec, spec.duration_s, seed=spec.seed)
    finally:
        await target.close()
    record: dict[str, Any] = {
        "system": target.name,
        "texts_per_request": stream.per_request,
        **{k: v for k, v in asdict(spec).items() if not (spec.mode == "closed" and k in ("rate", "arrival"))},
        **summarize(samples, elapsed),
        "server": watch.summary(),
    }
    busy = record["server"].get("encoder_busy_s")
    if busy is not None and elapsed > 0:  # seconds of encoder batches per second of run (1.0 = never idle)
        record["server"]["encoder_busy_fraction"] = round(busy / elapsed, 3)
    if spec.mode == "open":
        record["offered_rps"] = spec.rate
    return record


async def _phase(
    target: Target, stream: TextStream, spec: LoadSpec, duration_s: float, seed: int
) -> tuple[list[Sample], float]:
    if spec.mode == "closed":
        return await closed_phase(target, stream, spec.concurrency, duration_s, spec.max_requests)
    offsets = arrival_offsets(spec.rate, duration_s, spec.max_requests, spec.arrival, seed)
    return await open_phase(target, stream, offsets, spec.max_in_flight)
