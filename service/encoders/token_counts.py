"""Tokens an encoder was given against tokens it computed: its padding (or packing) overhead, measured.

The micro-batcher budgets a batch as texts x longest text, but the encoder then cuts the batch into
length buckets or packs several texts per row, so what it really computes is less, and only it knows how
much. These counts, exposed on /metrics as `xret_encoder_tokens_total`, let a load run read the overhead
(computed / real) of the serving mode it measured instead of inferring it.
"""

from __future__ import annotations

import threading


class TokenCounts:
    """Running totals of real tokens (the texts' own) and computed ones (the session inputs' size).

    `forward` may run in several worker threads at once (two batches in flight on a GPU), hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._real = 0
        self._computed = 0

    def add(self, real: int = 0, computed: int = 0) -> None:
        with self._lock:
            self._real += real
            self._computed += computed

    def reset(self) -> None:
        """Forget warm-up and calibration calls, so the totals count served work only."""
        with self._lock:
            self._real = self._computed = 0

    def snapshot(self) -> tuple[int, int]:
        """(real, computed) at one instant."""
        with self._lock:
            return self._real, self._computed
