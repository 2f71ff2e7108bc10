"""Latency and throughput arithmetic over the samples one load run collected.

Kept free of I/O so the maths can be checked on hand-made numbers. Percentiles interpolate
linearly between order statistics (numpy's default), so p50 of [1, 2, 3, 4] is 2.5: with few
samples the nearest-rank definition jumps between samples and hides how the tail moves.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class Sample:
    """One request: when it was due, when it went out, when it came back (seconds, one clock).

    `scheduled` is the planned send time; in a closed loop it equals `started`. Latency counts from
    `scheduled`, so an open-loop request that waited for a free sender still pays for that wait
    (otherwise queueing on the client would be hidden: the coordinated-omission mistake).
    """

    scheduled: float
    started: float
    finished: float
    texts: int
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.scheduled

    @property
    def send_lag(self) -> float:
        return self.started - self.scheduled


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99, mean and max in milliseconds; None when nothing succeeded (JSON has no NaN)."""
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    out: dict[str, float | None] = {f"p{q:g}": round(percentile(seconds, q) * 1000, 3) for q in PERCENTILES}
    out["mean"] = round(sum(seconds) / len(seconds) * 1000, 3)
    out["max"] = round(max(seconds) * 1000, 3)
    return out


def summarize(samples: Sequence[Sample], elapsed_s: float) -> dict[str, Any]:
    """Figures of one measured phase: throughput counts successes only, latency is of successes.

    `elapsed_s` is the wall time of the phase (first planned send to last answer); errors are
    counted by kind so a run that "got faster" by failing fast shows it.
    """
    if elapsed_s <= 0:
        raise ValueError(f"elapsed time must be positive, got {elapsed_s}")
    ok = [s for s in samples if s.error is None]
    errors = Counter(s.error for s in samples if s.error is not None)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "error_ratio": round(sum(errors.values()) / len(samples), 6) if samples else 0.0,
        "elapsed_s": round(elapsed_s, 4),
        "throughput_rps": round(len(ok) / elapsed_s, 3),
        "texts_per_s": round(sum(s.texts for s in ok) / elapsed_s, 3),
        "latency_ms": latency_summary_ms([s.latency for s in ok]),
        "send_lag_ms": latency_summary_ms([s.send_lag for s in samples]),
    }
