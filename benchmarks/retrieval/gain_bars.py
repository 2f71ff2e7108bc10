"""Bar chart of each system's gain over the baseline, with paired bootstrap 95% intervals, dev beside test.

The averages plot draws P@1 on a 0-100 axis, where the 0.1-2 point differences a study chooses between
vanish; this one draws only the differences, each with the interval of the paired comparison (the same
sentences and resamples for both systems), so whether a dev gain carries to the test set reads off one
figure. `draw_gain_bars` also draws the report's rescoring chart (gains over plain cosine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np


def gain_series(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, gains by system, direction) for every task that has gains: the dev set first."""
    series: list[tuple[str, dict[str, Any], str]] = []
    dev = results.get("stsb_dev", {}).get("gains") or {}
    tatoeba = results.get("tatoeba", {}).get("gains") or {}
    if dev:
        series.append(("stsb-dev xx->en (DEV)", dev, "xx_en"))
    if tatoeba:
        series += [("Tatoeba xx->en (XTREME)", tatoeba, "xx_en"), ("Tatoeba en->xx", tatoeba, "en_xx")]
    return series


Series = tuple[str, list[float], list[float], list[float]]  # label, values, CI lows, CI highs (NaN: no bar)


def series_of(label: str, entries: list[tuple[dict[str, Any] | None, str]]) -> Series:
    """A bar series from (gain entry or None, direction) pairs: each gain and its 95% interval, NaN for None."""
    return (
        label,
        [g[d] if g else np.nan for g, d in entries],
        [g[f"{d}_ci95"][0] if g else np.nan for g, d in entries],
        [g[f"{d}_ci95"][1] if g else np.nan for g, d in entries],
    )


def draw_gain_bars(
    path: Path, groups: list[str], series: list[Series], *, ylabel: str, title: str, fmt: str, rotation: int = 0
) -> None:
    """Grouped bars with CI whiskers and a zero line: one group per entry of `groups`, one bar per series."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(series)) ** 0.5), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (label, values, lows, highs) in enumerate(series):
        v = np.array(values, dtype=float)
        err = np.vstack([v - np.array(lows, dtype=float), np.array(highs, dtype=float) - v])
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, v, width, yerr=err, capsize=3, label=label)
        ax.bar_label(bars, fmt=fmt, fontsize=7, padding=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, groups, rotation=rotation, ha="right" if rotation else "center", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gain_bars(results: dict[str, Any], path: Path) -> None:
    """One group per system (the baseline left out), one bar per task and direction; NaN where not run."""
    systems = [name for name in results["systems"] if name != results["baseline"]]
    series = [series_of(label, [(gains.get(s), d) for s in systems]) for label, gains, d in gain_series(results)]
    title = f"Gain over {results['baseline']}, paired bootstrap 95% CI"
    draw_gain_bars(path, systems, series, ylabel="P@1 gain, points", title=title, fmt="%+.2f", rotation=20)
