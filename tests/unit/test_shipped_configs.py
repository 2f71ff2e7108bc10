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


def test_levers_change_one_knob_of_the_study_upos_each() -> None:
    """levers.yaml compares against syntactic.yaml's upos without retraining it: only the named knob may differ."""
    study, levers = load_config(CONFIGS / "syntactic.yaml"), load_config(CONFIGS / "levers.yaml")
    upos = dataclasses.asdict(study.tasks["upos"])
    expected = {"upos_lambda0": {"retention_lambda": 0.0}, "upos_top4": {"train_layers": "top:4"}}
    expected["upos_lora"] = {"train_layers": "lora"}
    assert set(levers.tasks) == set(expected)
    assert levers.out != study.out and levers.base == study.base
    for name, changed in expected.items():
        knobs = dataclasses.asdict(levers.tasks[name])
        # eval_full_base only says whether to also score the untouched base: a report knob, not a training one
        differing = {key: knobs[key] for key in knobs if knobs[key] != upos[key] and key != "eval_full_base"}
        assert differing == changed, name
