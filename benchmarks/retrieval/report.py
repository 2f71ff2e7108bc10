"""Results on disk: `<name>.json` (everything), `<name>.md` (tables), `<name>-*.png` (plots).

The markdown says in its headings what each number is (XTREME score = Tatoeba xx->en; BUCC = the zh-en
SAMPLE split; CV vs oracle threshold; stsb-dev = the DEV set), because tables get copied around without
their context.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from benchmarks.retrieval.gain_bars import draw_gain_bars, gain_series, plot_gain_bars, series_of
from benchmarks.retrieval.rescoring import RESCORED_KEY


def write_report(results: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    """Write JSON, markdown and plots; returns the paths written, by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json", "markdown": out_dir / f"{name}.md"}
    paths["averages_plot"] = out_dir / f"{name}-averages.png"
    plot_averages(results, paths["averages_plot"])
    if results.get("tatoeba", {}).get("gains"):
        paths["gains_plot"] = out_dir / f"{name}-gains.png"
        plot_gains(results, paths["gains_plot"])
    if gain_series(results) and len(results["systems"]) > 1:
        paths["gain_bars_plot"] = out_dir / f"{name}-gain-bars.png"
        plot_gain_bars(results, paths["gain_bars_plot"])
    if results["config"].get("rescore") and (results.get("stsb_dev") or results.get("tatoeba")):
        paths["rescoring_plot"] = out_dir / f"{name}-rescoring.png"
        plot_rescoring(results, paths["rescoring_plot"])
    results["files"] = {kind: str(path) for kind, path in paths.items()}
    paths["json"].write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(results, {k: p.name for k, p in paths.items()}), encoding="utf-8")
    return paths


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ci(pair: list[float]) -> str:
    return f"[{pair[0]:.1f}, {pair[1]:.1f}]"


def _bucc_summary(results: dict[str, Any], system: str) -> list[str]:
    scores = results.get("bucc", {}).get("results", {}).get(system)
    if scores is None:
        return ["-"] * 4
    return [
        f"{scores['ratio_margin']['cv']['f1']:.1f}",
        f"{scores['ratio_margin']['oracle']['f1']:.1f}",
        f"{scores['cosine']['cv']['f1']:.1f}",
        f"{scores['cosine']['oracle']['f1']:.1f}",
    ]


def _rescored_cell(result: dict[str, Any], key: str, method: str, direction: str) -> str:
    entry = result.get(key, {}).get(method)
    if entry is None:
        return "-"
    gain = entry["gain_over_cosine"]
    return f"{entry['average'][direction]:.2f} ({gain[direction]:+.2f} {_ci(gain[f'{direction}_ci95'])})"


def _paper_rescored(result: dict[str, Any], method: str, code: str) -> str:
    """One language's paper-rescored xx->en P@1, or '-' for a system not rescored (an rrf system)."""
    entry = result.get("rescored", {}).get(method)
    return "-" if entry is None else f"{entry['per_language'][code]['xx_en']:.1f}"


def _rescoring_section(results: dict[str, Any]) -> list[str]:
    """One table: plain cosine vs each rescoring, both versions, per system and task (DEV first)."""
    cfg = results["config"]
    methods: list[str] = cfg.get("rescore") or []
    if not methods:
        return []
    lines = ["", "## Hubness rescoring (P@1 %, gain over cosine and its paired bootstrap 95% CI)", ""]
    lines.append(
        "Decide on stsb-dev (the DEV set), never on Tatoeba (a test set). "
        f"paper: r over the other side, every target rescored (XTREME/LASER, k={cfg['rescore_k']}). "
        f"service: r_y over the target side itself, r_x from the query's own top-{cfg['rescore_k']}, the top "
        f"{cfg['rescore_service_candidates']} cosine candidates re-ranked (what the service's `rescore` does)."
    )
    reference = cfg.get("rescore_reference")
    variants = [(label, key) for label, key in RESCORED_KEY.items() if label != "reference" or reference]
    if reference:
        lines.append(
            f"reference: as service, but r_y over the hubness reference {reference['path']} ({reference['sentences']} "
            f"sentences, sha256 {reference['sha256'][:12]}; `--hubness-reference` in the service)."
        )
    lines.append("")
    header = ["system", "task", "cosine"] + [f"{m} ({label})" for m in methods for label, _ in variants]
    rows = []
    tasks = (("stsb_dev", "stsb-dev DEV", ("xx_en",)), ("tatoeba", "Tatoeba test", ("xx_en", "en_xx")))
    for key, label, directions in tasks:
        block = results.get(key)
        if not block:
            continue
        for name, result in block["results"].items():
            for direction in directions:
                row = [name, f"{label} {direction.replace('_', '->')}", f"{result['average'][direction]:.2f}"]
                row += [_rescored_cell(result, key, m, direction) for m in methods for _, key in variants]
                rows.append(row)
    return lines + _table(header, rows)


def _dev_gain_cells(gain: dict[str, Any] | None) -> list[str]:
    return ["-", "-"] if gain is None else [f"{gain['xx_en']:+.2f}", _ci(gain["xx_en_ci95"])]


def _stsb_dev_section(results: dict[str, Any]) -> list[str]:
    dev = results.get("stsb_dev")
    if not dev:
        return []
    methods: list[str] = results["config"].get("rescore") or []
    systems = list(dev["results"])
    lines = ["", "## stsb_multi_mt dev retrieval (DEV set), xx->en P@1 %", "", dev["protocol"] + ".", ""]
    gains = dev.get("gains", {})
    lines += _table(
        ["system", "average xx->en", "95% CI", f"gain over {results['baseline']}", "paired 95% CI"],
        [
            [n, f"{r['average']['xx_en']:.2f}", _ci(r["average"]["xx_en_ci95"]), *_dev_gain_cells(gains.get(n))]
            for n, r in dev["results"].items()
        ],
    )
    lines.append("")
    header = ["language", "n"] + [f"{n} {m}" for n in systems for m in ("cosine", *methods)]
    rows = []
    for lang in dev["languages"]:
        row = [lang["code"], str(lang["n_used"])]
        for name in systems:
            result = dev["results"][name]
            row.append(f"{result['per_language'][lang['code']]['xx_en']:.1f}")
            row += [_paper_rescored(result, m, lang["code"]) for m in methods]
        rows.append(row)
    if methods:
        lines.append("Rescored columns are the paper version (r over the other side).")
        lines.append("")
    return lines + _table(header, rows)


def _families_section(gains: dict[str, Any], baseline: str) -> list[str]:
    """Mean gain per language family (benchmarks/retrieval/families.py) and which families lose."""
    with_families = {name: g for name, g in gains.items() if g.get("families")}
    if not with_families:
        return []
    lines = ["", f"## Tatoeba gains over {baseline} per language family (points, xx->en / en->xx)", ""]
    lines.append(
        "Mean of the family's languages' gains; a family is *losing* when its gain is below zero and *losing "
        "(CI)* when its whole paired 95% interval is. Grouping: benchmarks/retrieval/families.py."
    )
    lines.append("")
    first = next(iter(with_families.values()))["families"]
    header = ["family (languages)", *with_families]
    rows = [
        [f"{family} ({', '.join(entry['languages'])})"]
        + [
            f"{g['families'][family]['xx_en']:+.2f} / {g['families'][family]['en_xx']:+.2f}"
            if family in g["families"]
            else "-"
            for g in with_families.values()
        ]
        for family, entry in first.items()
    ]
    for label, key in (("losing", "families_losing"), ("losing (CI)", "families_losing_ci")):
        rows.append(
            [f"**{label}** xx->en / en->xx"]
            + [
                f"{', '.join(g[key]['xx_en']) or 'none'} / {', '.join(g[key]['en_xx']) or 'none'}"
                for g in with_families.values()
            ]
        )
    return lines + _table(header, rows)


def markdown(results: dict[str, Any], files: dict[str, str]) -> str:
    """The human-readable report; every heading names its split, direction and threshold kind."""
    cfg = results["config"]
    systems = list(results["systems"])
    tat = results.get("tatoeba")
    dev = results.get("stsb_dev")
    lines = [f"# Retrieval benchmark ({', '.join(systems)})", ""]
    lines.append(f"Tasks: {', '.join(cfg['tasks'])}; wall time {results['wall_s']:.0f} s. {results['units']}.")
    if cfg["max_sentences"] is not None:
        lines += ["", f"**CAPPED RUN: at most {cfg['max_sentences']} sentences per language / side. Not comparable.**"]
    lines += ["", "## Systems", ""]
    lines += _table(
        ["system", "repo", "members", "fusion", "dim", "fingerprint", "embedded / cached texts", "wall s"],
        [
            [
                name,
                f"`{info['repo']}`",
                ", ".join(info["members"]),
                info["fusion"] + (", language-centred" if info.get("center") else ""),
                str(info["dim"]),
                f"`{info['fingerprint']}`",
                f"{info['texts_embedded']} / {info['texts_from_cache']}",
                f"{info['wall_s']:.0f}",
            ]
            for name, info in results["systems"].items()
        ],
    )
    lines += ["", "## Summary", ""]
    if tat:
        lines.append(
            f"Tatoeba: {tat['language_set']} ({len(tat['languages'])} languages), average P@1 with 95% bootstrap "
            "intervals; xx->en is the XTREME score. "
        )
    if "bucc" in results:
        lines.append(f"BUCC: {results['bucc']['split']}; F1 with the CV threshold and with the ORACLE threshold.")
    rrf_systems = [name for name, info in results["systems"].items() if info.get("fusion") == "rrf"]
    if rrf_systems:
        lines.append(
            f"{', '.join(rrf_systems)}: fused by rrf, so P@1 is the top hit of the service's RRF search (each member "
            "ranks the summed-cosine candidates), not a cosine; no rescoring and no BUCC, as in the service. "
        )
    if dev:
        lines.append("stsb-dev: the DEV set (choices are made here), strict xx->en P@1.")
    lines.append("")
    rows = []
    for name in systems:
        row = [name]
        if dev:
            avg = dev["results"][name]["average"]
            row += [f"{avg['xx_en']:.2f}", _ci(avg["xx_en_ci95"])]
        if tat:
            avg = tat["results"][name]["average"]
            row += [f"{avg['xx_en']:.2f}", _ci(avg["xx_en_ci95"]), f"{avg['en_xx']:.2f}", _ci(avg["en_xx_ci95"])]
        rows.append(row + _bucc_summary(results, name))
    header = ["system"]
    if dev:
        header += ["stsb-dev xx->en (DEV)", "95% CI"]
    if tat:
        header += ["Tatoeba xx->en (XTREME)", "95% CI", "Tatoeba en->xx", "95% CI"]
    header += ["BUCC margin F1 (CV)", "BUCC margin F1 (oracle)", "BUCC cosine F1 (CV)", "BUCC cosine F1 (oracle)"]
    lines += _table(header, rows)
    lines += _rescoring_section(results)
    if tat and tat["gains"]:
        lines += ["", f"## Tatoeba gains over {results['baseline']} (points, paired bootstrap 95% CI)", ""]
        lines += _table(
            ["system", "xx->en gain", "95% CI", "en->xx gain", "95% CI"],
            [
                [name, f"{g['xx_en']:+.2f}", _ci(g["xx_en_ci95"]), f"{g['en_xx']:+.2f}", _ci(g["en_xx_ci95"])]
                for name, g in tat["gains"].items()
            ],
        )
        lines += _families_section(tat["gains"], results["baseline"])
    lines += _stsb_dev_section(results)
    if tat:
        methods: list[str] = cfg.get("rescore") or []
        lines += ["", "## Tatoeba per language (P@1 %, xx->en / en->xx)", "", tat["protocol"] + "."]
        if methods:
            lines.append(f"Rescored columns: xx->en, paper version ({', '.join(methods)}).")
        lines.append("")
        header = ["language", "n"] + [
            f"{name} {d}" for name in systems for d in ("xx->en", "en->xx", *(f"{m} xx->en" for m in methods))
        ]
        rows = []
        for lang in tat["languages"]:
            row = [f"{lang['code']} ({lang['iso3']})", str(lang["n_used"])]
            for name in systems:
                result = tat["results"][name]
                scores = result["per_language"][lang["iso3"]]
                row += [f"{scores['xx_en']:.1f}", f"{scores['en_xx']:.1f}"]
                row += [_paper_rescored(result, m, lang["iso3"]) for m in methods]
            rows.append(row)
        lines += _table(header, rows)
    if "bucc" in results:
        b = results["bucc"]
        lines += ["", "## BUCC 2018 zh-en, SAMPLE split", ""]
        lines.append(
            f"{b['split']}. {b['n_src']} zh / {b['n_tgt']} en sentences, {b['n_gold']} gold pairs. {b['mining']}. "
            f"CV: {cfg['cv_folds']}-fold over zh sentences (seed {cfg['seed']}), each fold scored at the threshold "
            "that maximises F1 on the other folds, counts pooled. "
            "ORACLE: threshold tuned on the same gold (optimistic)."
            + "".join(f" {name}: {why}." for name, why in b.get("not_scored", {}).items())
        )
        lines.append("")
        rows = []
        for name, per in b["results"].items():
            for scoring, s in per.items():
                cv, oracle = s["cv"], s["oracle"]
                rows.append(
                    [
                        name,
                        scoring,
                        f"{cv['f1']:.1f}",
                        f"{cv['precision']:.1f}",
                        f"{cv['recall']:.1f}",
                        f"{cv['mean_threshold']:.4f}",
                        f"{oracle['f1']:.1f}",
                        f"{oracle['threshold']:.4f}",
                        f"{s['gold_among_candidates']} / {b['n_gold']}",
                    ]
                )
        lines += _table(
            [
                "system",
                "scoring",
                "F1 (CV)",
                "P (CV)",
                "R (CV)",
                "mean CV threshold",
                "F1 (ORACLE)",
                "oracle threshold",
                "gold among candidates",
            ],
            rows,
        )
    lines += ["", "## Plots", ""]
    lines += [f"![{kind}]({file})" for kind, file in files.items() if file.endswith(".png")]
    return "\n".join(lines) + "\n"


def plot_averages(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: one group per headline metric, one bar per system (CI whiskers on Tatoeba)."""
    systems = list(results["systems"])
    metrics: list[tuple[str, list[float], list[list[float]] | None]] = []
    dev = results.get("stsb_dev")
    if dev:
        values = [dev["results"][s]["average"]["xx_en"] for s in systems]
        cis = [dev["results"][s]["average"]["xx_en_ci95"] for s in systems]
        metrics.append(("stsb-dev xx->en\n(DEV)", values, cis))
    tat = results.get("tatoeba")
    if tat:
        for direction, label in (("xx_en", "Tatoeba xx->en\n(XTREME)"), ("en_xx", "Tatoeba en->xx")):
            values = [tat["results"][s]["average"][direction] for s in systems]
            cis = [tat["results"][s]["average"][f"{direction}_ci95"] for s in systems]
            metrics.append((label, values, cis))
    if "bucc" in results:
        for scoring in ("ratio_margin", "cosine"):
            label = f"BUCC zh-en sample\n{scoring.replace('_', ' ')} F1 (CV)"
            scored = results["bucc"]["results"]
            values = [scored[s][scoring]["cv"]["f1"] if s in scored else np.nan for s in systems]  # NaN: no bar
            metrics.append((label, values, None))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(metrics) * max(1, len(systems)) ** 0.5), 4.5))
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(metrics))
    for i, system in enumerate(systems):
        values = [m[1][i] for m in metrics]
        err = np.array(
            [
                [v - m[2][i][0], m[2][i][1] - v] if m[2] else [np.nan, np.nan]  # NaN: no whisker drawn
                for v, m in zip(values, metrics, strict=True)
            ]
        ).T
        bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, yerr=err, capsize=3, label=system)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(x, [m[0] for m in metrics], fontsize=8)
    ax.set_ylabel("percent")
    ax.set_ylim(0, 105)
    ax.set_title("Retrieval: averages per system" + (" (CAPPED RUN)" if results["config"]["max_sentences"] else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gains(results: dict[str, Any], path: Path) -> None:
    """Heatmap of Tatoeba xx->en gains over the baseline: languages down, systems across."""
    tat = results["tatoeba"]
    systems = list(tat["gains"])
    codes = [lang["iso3"] for lang in tat["languages"]]
    labels = [lang["code"] for lang in tat["languages"]]
    gains = np.array([[tat["gains"][s]["per_language"][c]["xx_en"] for s in systems] for c in codes])
    limit = max(1.0, float(np.abs(gains).max()))
    fig, ax = plt.subplots(figsize=(2.5 + 1.1 * len(systems), 1.5 + 0.28 * len(codes)))
    image = ax.imshow(gains, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(codes)), labels, fontsize=7)
    for (row, col), value in np.ndenumerate(gains):
        colour = "white" if abs(value) > 0.6 * limit else "black"  # readable on the dark ends of the map
        ax.text(col, row, f"{value:+.1f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, label="P@1 gain, points")
    ax.set_title(f"Tatoeba xx->en gain over {results['baseline']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rescoring(results: dict[str, Any], path: Path) -> None:
    """Gain of each rescoring variant over plain cosine (first method asked for), with paired 95% CIs.

    One group per system and task (DEV first), one bar per variant: whether a variant that helps on the dev
    set also helps on the test set is the question this plot answers at a glance.
    """
    method = results["config"]["rescore"][0]
    groups: list[tuple[str, dict[str, Any], str]] = []
    for key, label, directions in (("stsb_dev", "DEV", ("xx_en",)), ("tatoeba", "Tatoeba", ("xx_en", "en_xx"))):
        for system, result in results.get(key, {}).get("results", {}).items():
            for direction in directions:
                groups.append((f"{system}\n{label} {direction.replace('_', '->')}", result, direction))
    variants = [(v, k) for v, k in RESCORED_KEY.items() if any(k in r for _, r, _ in groups)]
    series = [
        series_of(variant, [(r[key][method]["gain_over_cosine"] if key in r else None, d) for _, r, d in groups])
        for variant, key in variants
    ]
    title = f"Hubness rescoring ({method}): gain over plain cosine, paired 95% CI"
    draw_gain_bars(
        path, [g[0] for g in groups], series, ylabel="P@1 gain over cosine, points", title=title, fmt="%+.1f"
    )
