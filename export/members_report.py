"""One markdown table of what a repository's members are: task scores, retrieval dev, knobs, time, size.

Issue 3's note asks, for each trained member, its task's dev and test scores, its training time and the
size of the resulting repository. All of it is already in each `member.json` (written by the pipeline
from the training summary); this reads it back so the numbers in notes and RESULTS.md come from the
files rather than from a log read by eye.

    python -m export members artifacts/pipelines/syntactic/repo
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.repository import read_json


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_scores(scores: dict[str, Any] | None) -> str:
    """`accuracy 0.927` for one task, `upos accuracy 0.914; deps las 0.582, uas 0.635` for several."""
    if not scores:
        return "-"
    parts = []
    for key, value in sorted(scores.items()):
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {_number(v)}" for k, v in sorted(value.items()) if not isinstance(v, dict))
            parts.append(f"{key} {inner}")
        else:
            parts.append(f"{key} {_number(value)}")
    return "; ".join(parts)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def member_rows(repo: Path) -> list[dict[str, Any]]:
    """One dict per member folder (sorted by name), with the fields the table shows."""
    rows = []
    for folder in sorted(p for p in (repo / "members").iterdir() if (p / "member.json").is_file()):
        spec = read_json(folder / "member.json")
        scores = spec.get("scores") or {}
        training = spec.get("training") or {}
        rows.append(
            {
                "name": folder.name,
                "tasks": spec.get("tasks") or [],
                "dev": format_scores(scores.get("dev")),
                "test": format_scores(scores.get("test")),
                "retrieval_dev_p1": scores.get("retrieval_dev_p1"),
                "wise_alpha": training.get("wise_alpha"),
                "probe_steps": training.get("probe_steps"),
                "steps": training.get("steps_done", training.get("steps")),
                "wall_time_s": training.get("wall_time_s"),
                "soup_of": training.get("soup_of"),
                "mb": folder_bytes(folder) / 1e6,
            }
        )
    return rows


def markdown(repo: Path) -> str:
    """The members table, then the ensemble the repository serves and its total size."""
    rows = member_rows(repo)
    lines = [
        f"Members of `{repo}`:",
        "",
        "| member | tasks | task dev | task test | retrieval dev P@1 | WiSE alpha | probe / joint steps "
        "| train wall s | MB |",
        "|---|---|---|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        tasks = ", ".join(r["tasks"]) or "(none: untrained)"
        if r["soup_of"]:
            tasks = f"soup of {', '.join(r['soup_of'])}"
        p1 = "-" if r["retrieval_dev_p1"] is None else f"{r['retrieval_dev_p1']:.3f}"
        steps = "-" if r["steps"] is None else f"{r['probe_steps'] or 0} / {r['steps']}"
        wall = "-" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f}"
        alpha = "-" if r["wise_alpha"] is None else _number(r["wise_alpha"])
        lines.append(
            f"| {r['name']} | {tasks} | {r['dev']} | {r['test']} | {p1} | {alpha} | {steps} | {wall} | {r['mb']:.0f} |"
        )
    lines.append("")
    if (repo / "ensemble.json").is_file():
        ensemble = read_json(repo / "ensemble.json")
        fusion = ensemble.get("fusion", {})
        lines.append(
            f"Served ensemble: {', '.join(ensemble.get('members', []))} ({fusion.get('method')}, "
            f"weights {fusion.get('weights')})."
        )
    lines.append(f"Repository size: {folder_bytes(repo) / 1e9:.2f} GB ({len(rows)} members).")
    return "\n".join(lines) + "\n"
