"""Batch by expected run time: a per-member model of what one session call costs, and the split it implies.

A batch is padded to its longest row, so mixed lengths waste work, but every extra session call has a
price too: on a CPU each call streams all the weights once (about 5 ms for multilingual-e5-small on 2
cores, as much as 30 real tokens), on a GPU it pays kernel launches. Neither a fixed padding bound nor
a fixed minimum group size gets both right for every batch and machine (PERFORMANCE.md: batches of 16
random sentences at 32 one-text clients ran as one or two calls padded ~40%). So each member measures
its own call cost at warm-up, `seconds = fixed + per_token * rows * L + per_attention * rows * L^2`
for a call of `rows` rows padded to length L, and a batch is cut into the length-sorted groups whose
predicted total time is smallest (an exact dynamic programme over cut points: a group's cost depends
only on its row count and its longest row, so optimal groups are contiguous in length order).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

# (rows, padded length) of the calibration calls: short and long, one row and many, so the three terms
# separate; small enough that calibrating costs well under a second on 2 cores for mE5-small.
CALIBRATION_SHAPES = ((1, 8), (1, 64), (4, 16), (8, 32), (16, 8), (16, 24), (2, 128))
CALIBRATION_REPEATS = 2


@dataclass(frozen=True)
class CallCost:
    """Predicted seconds of one session call: fixed + per_token * rows * L + per_attention * rows * L**2."""

    fixed: float
    per_token: float
    per_attention: float = 0.0

    def seconds(self, rows: int, length: int) -> float:
        return self.fixed + rows * length * (self.per_token + self.per_attention * length)

    def as_dict(self) -> dict[str, float]:
        return {k: float(f"{v:.4g}") for k, v in asdict(self).items()}


# Used until a member has measured itself (and by callers with no session at hand): mE5-small, 2 cores.
DEFAULT_CALL_COST = CallCost(fixed=5.0e-3, per_token=1.6e-4, per_attention=3.5e-7)


def fit_call_cost(samples: list[tuple[int, int, float]]) -> CallCost:
    """Least-squares fit of (rows, length, seconds) samples, every coefficient kept >= 0.

    A negative term (noise on a quiet term) is dropped and the rest refitted, so the model never
    predicts that more rows or longer rows are cheaper.
    """
    if not samples:
        raise ValueError("fit_call_cost needs at least one (rows, length, seconds) sample")
    design = np.array([[1.0, r * n, r * n * n] for r, n, _ in samples])
    target = np.array([s for _, _, s in samples])
    active = [0, 1, 2]
    coef = np.zeros(3)
    while active:
        solution, *_ = np.linalg.lstsq(design[:, active], target, rcond=None)
        if (solution >= 0).all():
            coef[active] = solution
            break
        active.pop(int(np.argmin(solution)))
    if coef[0] == 0 and coef[1] == 0:  # degenerate timings: keep a model that still prefers less padding
        coef[1] = max(float(target.mean()), 1e-9) / max(float(design[:, 1].mean()), 1.0)
    return CallCost(fixed=float(coef[0]), per_token=float(coef[1]), per_attention=float(coef[2]))


def calibrate(run: Callable[[int, int], object], repeats: int = CALIBRATION_REPEATS) -> CallCost:
    """Time `run(rows, length)` on the calibration shapes (best of `repeats`, after one untimed call each)."""
    samples = []
    for rows, length in CALIBRATION_SHAPES:
        run(rows, length)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run(rows, length)
            best = min(best, time.perf_counter() - start)
        samples.append((rows, length, best))
    return fit_call_cost(samples)


def cost_buckets(lengths: list[int], cost: CallCost) -> list[list[int]]:
    """Row indices cut into groups (ascending length) whose predicted total call time is smallest."""
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(np.asarray(lengths), kind="stable")
    longest = np.asarray(lengths)[order].astype(np.float64)  # a group ending at row j is padded to longest[j]
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n)
    for end in range(1, n + 1):
        rows = end - starts[:end]
        length = longest[end - 1]
        totals = best[:end] + cost.fixed + rows * length * (cost.per_token + cost.per_attention * length)
        cut[end] = int(np.argmin(totals))
        best[end] = totals[cut[end]]
    groups: list[list[int]] = []
    end = n
    while end > 0:
        groups.append([int(i) for i in order[cut[end] : end]])
        end = int(cut[end])
    return groups[::-1]
