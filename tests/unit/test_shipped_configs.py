"""The shipped pipeline configs parse, and the CPU slice trains exactly what the full study would train."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from export.pipeline.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "export" / "configs"


@pytest.mark.parametrize("name", ["syntactic.yaml", "syntactic-cpu.yaml", "pilot.yaml", "tiny.yaml"])
def test_shipped_config_parses(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.tasks and config.ensemble is not None


def test_cpu_slice_reuses_the_study_steps() -> None:
    """Same output folder and identical task knobs: running syntactic.yaml later skips what the slice trained."""
    study, cpu = load_config(CONFIGS / "syntactic.yaml"), load_config(CONFIGS / "syntactic-cpu.yaml")
    assert cpu.out == study.out and cpu.base == study.base
    assert set(cpu.tasks) < set(study.tasks)
    for name, knobs in cpu.tasks.items():
        assert knobs == study.tasks[name], name
    assert {"upos", "deps", "chunk", "ccg"} <= set(cpu.tasks)
    assert {"xpos", "multi", "sts", "nli"} <= set(study.tasks)


def test_levers_change_one_knob_of_a_study_member_each() -> None:
    """levers.yaml compares against syntactic.yaml's members without retraining them: one knob differs each."""
    study, levers = load_config(CONFIGS / "syntactic.yaml"), load_config(CONFIGS / "levers.yaml")
    expected = {
        "upos_lambda0": ("upos", {"retention_lambda": 0.0}),
        "upos_top4": ("upos", {"train_layers": "top:4"}),
        "upos_lora": ("upos", {"train_layers": "lora"}),
        "deps_lambda0": ("deps", {"retention_lambda": 0.0}),
    }
    assert set(levers.tasks) == set(expected)
    assert levers.out != study.out and levers.base == study.base
    for name, (reference, changed) in expected.items():
        knobs, study_knobs = dataclasses.asdict(levers.tasks[name]), dataclasses.asdict(study.tasks[reference])
        # eval_full_base only says whether to also score the untouched base: a report knob, not a training one
        differing = {k: knobs[k] for k in knobs if knobs[k] != study_knobs[k] and k != "eval_full_base"}
        assert differing == changed, name
