"""The shipped pipeline configs parse, and the CPU slice trains exactly what the full study would train."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from export.pipeline.config import load_config
from export.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "export" / "configs"


@pytest.mark.parametrize(
    "name",
    [
        "syntactic.yaml",
        "syntactic-cpu.yaml",
        "pilot.yaml",
        "tiny.yaml",
        "lambda0.yaml",
        "gpu-smoke.yaml",
        "deps-seeds.yaml",
        "deps-steps.yaml",
        "deps-steps-extended.yaml",
    ],
)
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


def _differing(knobs: TrainConfig, reference: TrainConfig) -> dict[str, object]:
    """The training knobs of two TaskConfigs that differ; eval_full_base only says whether the untouched base is
    also scored (a report knob, not a training one)."""
    mine, theirs = dataclasses.asdict(knobs), dataclasses.asdict(reference)
    return {k: mine[k] for k in mine if mine[k] != theirs[k] and k != "eval_full_base"}


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
        assert _differing(levers.tasks[name], study.tasks[reference]) == changed, name


def test_lambda0_study_is_the_syntactic_study_without_retention() -> None:
    """lambda0.yaml's candidates are syntactic.yaml's members with retention_lambda 0 and nothing else changed,
    its seed repeats differ from them in the seed alone, and its pre-registered rule is the study's."""
    study, lambda0 = load_config(CONFIGS / "syntactic.yaml"), load_config(CONFIGS / "lambda0.yaml")
    assert lambda0.out != study.out and lambda0.base == study.base
    assert lambda0.ensemble is not None and study.ensemble is not None
    candidates = [m for m in lambda0.ensemble.members if m != "base"]
    assert candidates == ["upos", "deps", "chunk", "ccg", "xpos"]
    for name in candidates:
        assert _differing(lambda0.tasks[name], study.tasks[name]) == {"retention_lambda": 0.0}, name
    for name in ("upos_seed1", "deps_seed1"):
        reference = lambda0.tasks[name.removesuffix("_seed1")]
        assert _differing(lambda0.tasks[name], reference) == {"seed": 1}, name
    assert set(lambda0.tasks) == {*candidates, "upos_seed1", "deps_seed1"}
    assert lambda0.ensemble.selection == study.ensemble.selection == "smallest-within-noise"
    assert lambda0.ensemble.fusion == study.ensemble.fusion and lambda0.ensemble.weight_grid == [0, 1]


def test_deps_seeds_repeat_the_lambda0_deps_member_with_other_seeds() -> None:
    """deps-seeds.yaml's deps is lambda0.yaml's deps knob for knob (so seeds 0 and 1 reproduce stop 12's members),
    its other tasks differ from it in the seed alone, and its soup averages all four seeds."""
    lambda0, seeds = load_config(CONFIGS / "lambda0.yaml"), load_config(CONFIGS / "deps-seeds.yaml")
    assert seeds.out != lambda0.out and seeds.base == lambda0.base
    assert _differing(seeds.tasks["deps"], lambda0.tasks["deps"]) == {}
    assert seeds.tasks["deps_seed1"] == lambda0.tasks["deps_seed1"]
    for seed in (1, 2, 3):
        assert _differing(seeds.tasks[f"deps_seed{seed}"], seeds.tasks["deps"]) == {"seed": seed}
    assert seeds.soup is not None and seeds.soup.members == ["deps", "deps_seed1", "deps_seed2", "deps_seed3"]
    assert seeds.ensemble is not None and seeds.ensemble.members == ["base", *seeds.soup.members, seeds.soup.name]
    assert lambda0.ensemble is not None
    assert seeds.ensemble.selection == lambda0.ensemble.selection == "smallest-within-noise"


def test_deps_steps_change_only_the_joint_steps_of_the_seed0_deps_member() -> None:
    """deps-steps.yaml trains deps-seeds.yaml's deps (seed 0) longer and changes nothing else, so any difference
    from stop 12-13's base + deps is the training length's."""
    seeds, steps = load_config(CONFIGS / "deps-seeds.yaml"), load_config(CONFIGS / "deps-steps.yaml")
    assert steps.out != seeds.out and steps.base == seeds.base
    assert _differing(steps.tasks["deps_s300"], seeds.tasks["deps"]) == {"steps": 300}
    assert _differing(steps.tasks["deps_s600"], seeds.tasks["deps"]) == {"steps": 600}
    assert steps.ensemble is not None and seeds.ensemble is not None
    assert steps.ensemble.members == ["base", "deps_s300", "deps_s600"]
    assert steps.ensemble.selection == seeds.ensemble.selection and steps.ensemble.fusion == seeds.ensemble.fusion


def test_deps_steps_extended_extends_deps_steps_in_its_folder_without_retraining_it() -> None:
    """deps-steps-extended.yaml shares deps-steps.yaml's folder and repeats its members knob for knob (skip-if-done
    reuses them); its new members differ from deps_s600 in the training length or the seed alone."""
    first, second = load_config(CONFIGS / "deps-steps.yaml"), load_config(CONFIGS / "deps-steps-extended.yaml")
    assert second.out == first.out and second.base == first.base
    for name, knobs in first.tasks.items():
        assert second.tasks[name] == knobs, name
    assert _differing(second.tasks["deps_s1200"], first.tasks["deps_s600"]) == {"steps": 1200}
    assert _differing(second.tasks["deps_s600_seed1"], first.tasks["deps_s600"]) == {"seed": 1}
    assert second.ensemble is not None and first.ensemble is not None
    assert second.ensemble.members == [*first.ensemble.members, "deps_s1200", "deps_s600_seed1"]
