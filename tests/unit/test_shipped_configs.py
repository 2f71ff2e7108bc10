"""The shipped pipeline configs parse, and the CPU slice trains exactly what the full study would train."""

from __future__ import annotations

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
