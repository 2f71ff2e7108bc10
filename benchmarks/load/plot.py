"""Latency against throughput, one line per system, from scenario JSON files.

Each closed-loop run is a point (texts/s, latency); a system's points joined in order of
concurrency show where its latency turns upward, i.e. where it saturates. Open-loop runs get their
own panel (offered rate vs latency), where queueing shows as the knee. p50 is drawn solid and p99
dashed in the system's colour.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt


def save_grouped_bars(
    groups: list[str], series: dict[str, list[float]], out: Path, *, ylabel: str, title: str, log: bool = False
) -> None:
    """One bar per series in each group (`series[label][i]` in `groups[i]`), a legend, written as a PNG."""
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=label)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _runs(paths: list[Path]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for path in paths:
        runs.extend(json.loads(path.read_text(encoding="utf-8")).get("runs", []))
    return runs


def plot_latency_throughput(paths: list[Path], out: Path, texts_per_request: int = 1) -> Path:
    """Write a PNG of the closed-loop (and, when present, open-loop) runs found in `paths`."""
    runs = [r for r in _runs(paths) if r["texts_per_request"] == texts_per_request and r["ok"]]
    closed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    opened: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        (closed if r["mode"] == "closed" else opened)[r["system"]].append(r)
    if not closed and not opened:
        raise ValueError(f"no successful runs with {texts_per_request} text(s) per request in {paths}")
    panels = 2 if opened else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    systems = sorted(set(closed) | set(opened))
    colour = {s: colours[i % len(colours)] for i, s in enumerate(systems)}
    ax = axes[0][0]
    for system, points in sorted(closed.items()):
        points.sort(key=lambda r: r["concurrency"])
        x = [r["texts_per_s"] for r in points]
        ax.plot(x, [r["latency_ms"]["p50"] for r in points], "o-", color=colour[system], label=f"{system} p50")
        ax.plot(x, [r["latency_ms"]["p99"] for r in points], "x--", color=colour[system], label=f"{system} p99")
        for r in points:
            ax.annotate(
                str(r["concurrency"]),
                (r["texts_per_s"], r["latency_ms"]["p50"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ax.set(
        xlabel="throughput (texts/s)",
        ylabel="latency (ms)",
        yscale="log",
        title=f"closed loop, {texts_per_request} text(s)/request (labels: concurrency)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if opened:
        ax = axes[0][1]
        for system, points in sorted(opened.items()):
            points.sort(key=lambda r: r["offered_rps"])
            x = [r["offered_rps"] * texts_per_request for r in points]
            ax.plot(x, [r["latency_ms"]["p50"] for r in points], "o-", color=colour[system], label=f"{system} p50")
            ax.plot(x, [r["latency_ms"]["p99"] for r in points], "x--", color=colour[system], label=f"{system} p99")
        ax.set(
            xlabel="offered load (texts/s, Poisson arrivals)",
            ylabel="latency from planned send (ms)",
            yscale="log",
            title="open loop",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_recall(path: Path, out: Path) -> Path:
    """Recall@10 against search time per query for each index kind of a `recall` scenario file."""
    record = json.loads(path.read_text(encoding="utf-8"))
    points = record.get("points", [])
    if not points:
        raise ValueError(f"no recall points in {path}")
    fig, ax = plt.subplots(figsize=(7, 5))
    for kind in ("flat", "ivf", "hnsw"):
        mine = [p for p in points if p["kind"] == kind]
        if not mine:
            continue
        line = ax.plot([p["ms_per_query"] for p in mine], [p["recall_at_10"] for p in mine], "o-", label=kind)[0]
        knob = "nprobe" if kind == "ivf" else "ef_search"
        for p in mine:
            if knob in p:
                ax.annotate(
                    f"{knob} {p[knob]}",
                    (p["ms_per_query"], p["recall_at_10"]),
                    fontsize=7,
                    color=line.get_color(),
                    textcoords="offset points",
                    xytext=(4, -10),
                )
    ax.set(
        xlabel="search time per single-query call (ms, log)",
        ylabel="recall@10 against exact search",
        xscale="log",
        title=f"{record['n']:,} real sentence vectors, {record['queries']} held-out queries",
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_scenario(name: str, path: Path, out: Path) -> Path:
    """The plot a scenario's JSON gets: recall against search time for `recall`, else latency against throughput."""
    if name == "recall":
        return plot_recall(path, out)
    if name in ("packing", "spinning"):
        return plot_rounds(path, out)
    return plot_latency_throughput([path], out)


def plot_rounds(path: Path, out: Path) -> Path:
    """`scenario packing` / `spinning`: texts/s per round, one panel per load, one line per system.

    Rounds, not concurrency, on the x axis: the scenario's point is that the machine's speed drifts between
    rounds, so the lines should move together and the gaps between them are what the ratios measure.
    """
    summary = json.loads(path.read_text(encoding="utf-8"))["summary"]
    fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 4), squeeze=False)
    for ax, (load, entry) in zip(axes[0], sorted(summary.items()), strict=True):
        for system, values in sorted(entry.items()):
            if "texts_per_s" in values:
                rounds = range(1, len(values["texts_per_s"]) + 1)
                ax.plot(rounds, values["texts_per_s"], marker="o", label=system)
        ratios = ", ".join(f"{k} {v['median']}" for k, v in sorted(entry.items()) if "median" in v)
        ax.set_title(f"{load} (medians: {ratios})", fontsize=8)
        ax.set_xticks(range(1, 1 + max(len(v.get("texts_per_s", [])) for v in entry.values())))
        ax.set_xlabel("round")
        ax.set_ylabel("texts/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
