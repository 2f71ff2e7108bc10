"""`python -m export pipeline` on export/configs/tiny.yaml, and the `multi` task on the tiny encoder.

The pipeline runs once per module (about 35 s: four ONNX exports dominate); later tests read its output,
and the one that changes a task works on a copy. Skipping is checked through the run's own step log and
the `.done.json` bytes, never through timings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from export.__main__ import main as export_main
from export.pipeline import PipelineConfigError, StepLog, load_config, run_pipeline
from export.pipeline.config import parse_config
from export.tasks import load_task
from export.tasks.metrics import p_at_1
from export.tasks.retrieval_dev import load_retrieval_dev
from export.train import TrainConfig
from export.train.multitask import MultiTaskTrainer
from service.encoders import load_encoders
from service.ensemble import fuse_concat
from service.repository import load_repository, read_json

DATA = Path(os.environ.get("XRET_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
TINY = Path(__file__).resolve().parents[2] / "export" / "configs" / "tiny.yaml"
ALL_STEPS = [
    "base",
    "train:upos",
    "export:upos",
    "train:chunk",
    "export:chunk",
    "export:base",
    "soup:soup",
    "export:soup",
    "ensemble",
    "index",
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The machine is 2 shared cores; OpenMP workers waiting on a descheduled sibling slow tiny ops 30x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_raw(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    raw["data_dir"] = str(DATA)
    raw.update(changes)
    return raw


def run(raw: dict[str, Any], out: Path) -> StepLog:
    return run_pipeline(parse_config(raw, TINY, out=out), verbose=False)


def markers(out: Path) -> dict[str, bytes]:
    found = [*out.rglob(".done.json"), *out.rglob("*.done.json")]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(set(found))}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StepLog]:
    out = tmp_path_factory.mktemp("pipeline") / "out"
    return out, run(tiny_raw(), out)


def test_tiny_pipeline_builds_a_servable_repository(built: tuple[Path, StepLog]) -> None:
    out, log = built
    assert log.executed == ALL_STEPS and log.skipped == []
    repo = load_repository(out / "repo")  # the service's own start-up check, hashes included
    assert repo.ensemble.fusion.method == "concat"
    upos = read_json(out / "repo" / "members" / "upos" / "member.json")
    assert upos["tasks"] == ["upos"]
    for knob in ("lr_encoder", "lr_head", "steps", "seed", "train_layers", "retention_lambda", "wise_alpha"):
        assert knob in upos["training"], knob
    assert upos["training"]["lr_head"] == 1e-2 and upos["training"]["pipeline_data_limit"]["train"] == 32
    assert upos["scores"]["metric"] == "accuracy" and 0 <= upos["scores"]["dev"]["accuracy"] <= 1
    assert "retrieval_dev_p1" in upos["scores"] and "accuracy" in upos["scores"]["test"]
    base = read_json(out / "repo" / "members" / "base" / "member.json")
    assert base["tasks"] == [] and base["training"]["untrained"] is True
    index = json.loads((out / "index.done.json").read_text(encoding="utf-8"))
    assert index["result"]["sentences"] > 10 and (out / "index").is_dir()


def test_rerun_skips_every_step_and_rewrites_no_marker(built: tuple[Path, StepLog]) -> None:
    out, _ = built
    before = markers(out)
    assert len(before) == len(ALL_STEPS)
    log = run(tiny_raw(), out)
    assert log.executed == [] and log.skipped == ALL_STEPS
    assert markers(out) == before


def test_soup_member_is_the_mean_of_its_inputs(built: tuple[Path, StepLog]) -> None:
    out, _ = built
    soup = load_file(str(out / "soup" / "soup" / "model.safetensors"))
    upos = load_file(str(out / "train" / "upos" / "model.safetensors"))
    chunk = load_file(str(out / "train" / "chunk" / "model.safetensors"))
    moved = [k for k in soup if not torch.equal(upos[k], chunk[k])]
    assert moved, "the two members should differ somewhere, else the check proves nothing"
    for key, tensor in soup.items():
        torch.testing.assert_close(tensor, (upos[key] + chunk[key]) / 2, rtol=0, atol=1e-6)
    member = read_json(out / "repo" / "members" / "soup" / "member.json")
    assert member["training"]["soup_of"] == ["upos", "chunk"] and member["tasks"] == ["upos", "chunk"]


def test_dev_weights_are_chosen_by_a_grid_that_the_service_would_reproduce(built: tuple[Path, StepLog]) -> None:
    out, _ = built
    selection = read_json(out / "repo" / "selection.json")
    assert selection["members"] == ["base", "upos", "chunk", "soup"]
    assert len(selection["candidates"]) == 2**4 - 1  # grid [0, 1]: every non-empty subset
    best = max(c["p1"] for c in selection["candidates"])
    assert selection["rule"] == "best" and selection["chosen"]["p1"] == selection["best"]["p1"] == best
    assert all(c["within_noise"] == (c["gap_to_best"] <= 1.96 * c["se_to_best"]) for c in selection["candidates"])
    ensemble = read_json(out / "repo" / "ensemble.json")
    kept = [(m, w) for m, w in zip(selection["members"], selection["chosen"]["weights"], strict=True) if w > 0]
    assert ensemble["members"] == [m for m, _ in kept] and ensemble["fusion"]["weights"] == [w for _, w in kept]
    # recompute the chosen P@1 independently: service encoders, service fusion, the benchmark metric
    src, tgt = load_retrieval_dev(DATA, ["de"])["de"]
    src, tgt = src[:16], tgt[:16]
    encoders = load_encoders(load_repository(out / "repo"), device="cpu", threads=1)
    weights = ensemble["fusion"]["weights"]

    def fused(texts: list[str]) -> np.ndarray:
        return fuse_concat([e.forward(e.tokenizer.encode(texts)) for e in encoders], weights)

    assert p_at_1(fused(src), fused(tgt)) == pytest.approx(selection["chosen"]["by_lang"]["de"])


def test_the_noise_rule_picks_the_fewest_members_among_those_close_to_the_best(
    built: tuple[Path, StepLog], tmp_path: Path
) -> None:
    from export.pipeline.fusion_dev import select_weights

    repo = Path(shutil.copytree(built[0] / "repo", tmp_path / "repo"))
    src, tgt = load_retrieval_dev(DATA, ["de"])["de"]
    dev = {"de": (src[:16], tgt[:16])}
    members = ["base", "upos", "chunk", "soup"]
    plain = select_weights(repo, members, [0, 1], dev, workers=1)
    ruled = select_weights(repo, members, [0, 1], dev, workers=1, rule="smallest-within-noise")
    assert ruled["best"] == plain["chosen"] == plain["best"]  # same scores, only the choice differs
    close = [c for c in ruled["candidates"] if c["within_noise"]]
    fewest = min(sum(w > 0 for w in c["weights"]) for c in close)
    assert ruled["chosen"] in close and sum(w > 0 for w in ruled["chosen"]["weights"]) == fewest
    assert ruled["chosen"]["p1"] == max(c["p1"] for c in close if sum(w > 0 for w in c["weights"]) == fewest)


def test_members_embedded_side_by_side_give_what_one_at_a_time_gives(
    built: tuple[Path, StepLog], tmp_path: Path
) -> None:
    from export.pipeline.fusion_dev import _embed_members, embed_texts
    from export.repository_writer import write_ensemble

    repo = tmp_path / "repo"
    shutil.copytree(built[0] / "repo", repo)
    write_ensemble(repo, ["base", "upos", "chunk", "soup"], method="concat")
    encoders = load_encoders(load_repository(repo), device="cpu", threads=1)
    src, tgt = load_retrieval_dev(DATA, ["zh"])["zh"]
    texts = [*src[:20], *tgt[:20]]
    serial = [embed_texts(e, texts) for e in encoders]
    assert not np.allclose(serial[0], serial[1])  # members differ, so a swapped order would show
    parallel = _embed_members(encoders, texts, workers=3)
    assert len(parallel) == len(serial)
    for one, many in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(many, one)


def test_members_report_reads_every_members_scores_time_and_size(
    built: tuple[Path, StepLog], capsys: pytest.CaptureFixture[str]
) -> None:
    from export.members_report import member_rows

    repo = built[0] / "repo"
    rows = {r["name"]: r for r in member_rows(repo)}
    assert set(rows) == {"base", "upos", "chunk", "soup"}
    upos = read_json(repo / "members" / "upos" / "member.json")
    assert rows["upos"]["dev"] == f"accuracy {upos['scores']['dev']['accuracy']:.3f}"
    assert rows["upos"]["wall_time_s"] == upos["training"]["wall_time_s"] > 0
    assert rows["soup"]["soup_of"] == ["upos", "chunk"] and rows["base"]["dev"] == "-"
    onnx_mb = (repo / "members" / "upos" / "model.onnx").stat().st_size / 1e6
    assert rows["upos"]["mb"] >= onnx_mb
    assert export_main(["members", str(repo)]) == 0
    table = capsys.readouterr().out
    assert table.count("\n| ") == 1 + 4  # header and one row per member
    assert "soup of upos, chunk" in table and "Served ensemble:" in table and "Repository size:" in table
    assert export_main(["members", str(built[0])]) == 1  # the pipeline folder is not a repository


def test_skip_builds_the_repository_without_a_control_and_a_later_run_trains_only_it(
    built: tuple[Path, StepLog], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    raw = tiny_raw()
    raw["tasks"]["control"] = {"task": "upos", "shuffle_labels": True}
    config = parse_config(raw, TINY, out=out)
    with pytest.raises(PipelineConfigError, match=r"--skip \['upos'\]: the soup or the ensemble"):
        run_pipeline(config, verbose=False, skip=["upos"])
    with pytest.raises(PipelineConfigError, match="--skip names task"):
        run_pipeline(config, verbose=False, skip=["nope"])
    first = run_pipeline(config, verbose=False, skip=["control"])
    assert first.executed == [] and "train:control" not in first.skipped  # left out, not done
    assert not (out / "train" / "control").exists()
    later = run_pipeline(config, verbose=False)
    assert later.executed == ["train:control", "export:control"]  # nothing that reads it reruns
    assert read_json(out / "repo" / "members" / "control" / "member.json")["training"]["task"] == "upos"


def test_changing_one_task_reruns_only_that_task_and_what_reads_it(built: tuple[Path, StepLog], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    raw = tiny_raw()
    raw["tasks"]["chunk"]["lr_encoder"] = 5e-4
    before = markers(out)
    log = run(raw, out)
    assert log.executed == ["train:chunk", "export:chunk", "soup:soup", "export:soup", "ensemble", "index"]
    assert log.skipped == ["base", "train:upos", "export:upos", "export:base"]
    after = markers(out)
    assert after["train/upos/.done.json"] == before["train/upos/.done.json"]
    assert after["train/chunk/.done.json"] != before["train/chunk/.done.json"]
    assert read_json(out / "repo" / "members" / "chunk" / "member.json")["training"]["lr_encoder"] == 5e-4
    load_repository(out / "repo")


def test_export_packed_re_exports_every_member_with_a_packed_twin_and_trains_nothing(
    built: tuple[Path, StepLog], tmp_path: Path
) -> None:
    """Packed members embed what padded ones do, so dev picks the same ensemble weights from them."""
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    raw = tiny_raw()
    raw["export"] = {**(raw.get("export") or {}), "packed": True}
    log = run(raw, out)
    assert not [step for step in log.executed if step.startswith(("train:", "soup:"))]
    assert {"export:upos", "export:chunk", "export:base", "export:soup", "ensemble"} <= set(log.executed)
    for member in ("base", "upos", "chunk", "soup"):
        assert read_json(out / "repo" / "members" / member / "member.json")["packed_onnx_sha256"], member
    chosen = read_json(out / "repo" / "ensemble.json")["fusion"]
    assert chosen == read_json(built[0] / "repo" / "ensemble.json")["fusion"]
    load_repository(out / "repo")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tasks": {"pos": {}}}, "tasks.pos: task 'pos' unknown"),
        ({"tasks": {"upos": {"lr": 1e-3}}}, "tasks.upos: unknown training option(s) ['lr']"),
        ({"base": None}, "key 'base' is required"),
        ({"ensembel": {}}, "unknown key ensembel"),
        ({"export": {"max_len": 5}}, "unknown key export.max_len"),
        ({"export": {"packed": "yes"}}, "export.packed = 'yes'; expected true or false"),
        ({"soup": {"members": ["upos", "nli"]}}, "soup.members ['upos', 'nli']"),
        ({"ensemble": {"members": ["base", "xpos"]}}, "ensemble.members: unknown or repeated ['xpos']"),
    ],
)
def test_bad_config_is_one_clear_line_naming_the_key(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(PipelineConfigError) as info:
        parse_config(tiny_raw(**change), TINY, out=Path("unused"))
    assert expected in str(info.value) and str(TINY) in str(info.value)


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tasks={"upos": {"retention_lambda": -1}})), encoding="utf-8")
    assert export_main(["pipeline", str(config), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tasks.upos: retention_lambda = -1" in err
    assert not (tmp_path / "out").exists()  # nothing ran
    assert load_config(TINY).out == Path("artifacts/pipelines/tiny")


# --- the multi task ----------------------------------------------------------------------------------------


def multi_trainer(checkpoint: Path, n_train: int, **overrides: Any) -> MultiTaskTrainer:
    """A two-task (upos, deps) trainer on small slices of the real data, with fast settings."""
    tasks = []
    for name in ("upos", "deps"):
        task = load_task(name, DATA)
        tasks.append(dataclasses.replace(task, train=task.train[:n_train], dev=task.dev[:8], test=task.test[:8]))
    src, tgt = load_retrieval_dev(DATA, ["de"])["de"]
    knobs: dict[str, Any] = dict(
        task="multi",
        multi_tasks=("upos", "deps"),
        multi_sampling="uniform",
        batch_size=8,
        max_length=32,
        warmup=0.0,
        lr_encoder=1e-3,
        lr_head=1e-2,
        eval_every=1000,
        eval_task_sample=8,
        eval_retrieval_sample=8,
        dev_retrieval_langs=("de",),
        eval_full_base=False,
    )
    knobs.update(overrides)
    return MultiTaskTrainer(TrainConfig(**knobs), checkpoint, tasks, {"de": (src[:8], tgt[:8])}, progress=False)


def test_multi_task_training_lowers_every_tasks_loss(tiny_checkpoint: Path) -> None:
    trainer = multi_trainer(tiny_checkpoint, 32, steps=16)
    config = trainer.config
    assert set(trainer.schedule.tolist()) == {0, 1}  # every task gets steps
    for step in range(3):  # a batch never mixes tasks, and it is the task the schedule drew
        assert {trainer.task_of(i) for i in trainer.batch_indices(step)} == {int(trainer.schedule[step])}
    probes = [[int(trainer.offsets[k]) + i for i in range(16)] for k in range(2)]
    before = [trainer.eval_losses(p)[0] for p in probes]
    for _ in range(config.steps):
        trainer.train_step()
    after = [trainer.eval_losses(p)[0] for p in probes]
    for name, b, a in zip(config.multi_tasks, before, after, strict=True):
        assert a < 0.9 * b, f"{name}: loss {b:.4f} -> {a:.4f}"
    scores = trainer.evaluate()["task"]
    assert {"upos_accuracy", "deps_uas", "deps_las", "mean"} <= set(scores)
    assert scores["mean"] == pytest.approx(np.mean([scores["upos_accuracy"], scores["deps_las"]]))


def test_multi_task_probe_fits_every_head_and_leaves_the_joint_schedule_alone(tiny_checkpoint: Path) -> None:
    plain = multi_trainer(tiny_checkpoint, 24, steps=6)
    probed = multi_trainer(tiny_checkpoint, 24, steps=6, probe_steps=30)
    assert probed.schedule.tolist() == plain.schedule.tolist()  # the probe has a task stream of its own
    assert len(probed.probe_schedule) == 30 and set(probed.probe_schedule.tolist()) == {0, 1}
    for step in range(30):  # a probe batch holds one task, the one its schedule drew
        assert {probed.task_of(i) for i in probed.probe_batch_indices(step)} == {int(probed.probe_schedule[step])}
    losses = [[int(probed.offsets[k]) + i for i in range(16)] for k in range(2)]
    before = [probed.eval_losses(p)[0] for p in losses]
    encoder = {k: v.detach().clone() for k, v in probed.encoder.state_dict().items()}
    probed.probe()
    after = [probed.eval_losses(p)[0] for p in losses]
    for name, b, a in zip(probed.config.multi_tasks, before, after, strict=True):
        assert a < 0.9 * b, f"probe {name}: loss {b:.4f} -> {a:.4f}"
    assert all(torch.equal(v, probed.encoder.state_dict()[k]) for k, v in encoder.items())


def test_only_trains_the_named_tasks_and_a_full_run_then_skips_them(
    built: tuple[Path, StepLog], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    log = run_pipeline(parse_config(tiny_raw(), TINY, out=out), verbose=False, only=["chunk"])
    assert log.executed == ["base", "train:chunk", "export:chunk"]
    assert not (out / "train" / "upos").exists() and not (out / "repo" / "ensemble.json").exists()
    with pytest.raises(ValueError, match="nli"):
        run_pipeline(parse_config(tiny_raw(), TINY, out=out), verbose=False, only=["nli"])
    full = run(tiny_raw(), out)
    assert set(full.skipped) == {"base", "train:chunk", "export:chunk"}
    assert full.executed == [s for s in built[1].executed if s not in full.skipped]
