"""Bar chart of each system's gain over the baseline, with paired bootstrap 95% intervals, dev beside test.

The averages plot draws P@1 on a 0-100 axis, where the 0.1-2 point differences a study chooses between
vanish; this one draws only the differences, each with the interval of the paired comparison (the same
sentences and resamples for both systems), so whether a dev gain carries to the test set reads off one
figure.
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


def plot_gain_bars(results: dict[str, Any], path: Path) -> None:
    """One group per system (the baseline left out), one bar per task and direction; NaN where not run."""
    series = gain_series(results)
    systems = [name for name in results["systems"] if name != results["baseline"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(systems) * max(1, len(series)) ** 0.5), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(systems))
    for i, (label, gains, direction) in enumerate(series):
        values = np.array([gains[s][direction] if s in gains else np.nan for s in systems], dtype=float)
        lows = np.array([gains[s][f"{direction}_ci95"][0] if s in gains else np.nan for s in systems], dtype=float)
        highs = np.array([gains[s][f"{direction}_ci95"][1] if s in gains else np.nan for s in systems], dtype=float)
        err = np.vstack([values - lows, highs - values])
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, yerr=err, capsize=3, label=label)
        ax.bar_label(bars, fmt="%+.2f", fontsize=7, padding=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, systems, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("P@1 gain, points")
    ax.set_title(f"Gain over {results['baseline']}, paired bootstrap 95% CI", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
