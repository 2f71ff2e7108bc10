"""`python -m benchmarks.load.devices` on this machine's CPU: configurations, parity, speed rows, Tatoeba, errors."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from benchmarks.load import devices
from export.quantize import quantize_member

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "tatoeba" / "v1").is_dir(), reason="../shared/data/tatoeba absent")


@pytest.fixture(scope="module")
def repo(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny repository plus an fp16 copy of tiny0 (not served: ensemble.json is untouched)."""
    copy = Path(shutil.copytree(tiny_repo, tmp_path_factory.mktemp("devices") / "repo"))
    quantize_member(copy, "tiny0", mode="fp16")
    return copy


@pytest.mark.parametrize("text", ["tiny0", "tiny0@tpu", "@cpu", "tiny0@"])
def test_a_config_must_name_member_and_device(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be MEMBER@DEVICE"):
        devices.Config.parse(text)


def test_member_names_may_hold_at_signs_only_before_the_device() -> None:
    assert devices.Config.parse("a@b@cuda") == devices.Config("a@b", "cuda")


@needs_data
def test_report_compares_fp16_with_fp32_and_scores_tatoeba(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--repo", str(repo), "--config", "tiny0@cpu", "--config", "tiny0-fp16@cpu", "--data-dir", str(DATA)]
    argv += ["--sentences", "300", "--batch-sizes", "1,16", "--seconds", "0.2", "--tatoeba", "--languages", "fra,deu"]
    assert devices.main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "devices.json").read_text())
    assert (out / "devices.png").stat().st_size > 1000
    assert report["reference"] == "tiny0@cpu" and report["sentences"] == 300
    fp32, fp16 = report["configs"]
    assert fp32["provider"] == fp16["provider"] == "CPUExecutionProvider"
    assert (fp32["quantization"], fp16["quantization"]) == ("fp32", "fp16")
    assert fp32["cosine_to_reference"]["min"] == pytest.approx(1.0, abs=1e-6)
    assert 0.999 < fp16["cosine_to_reference"]["min"] < 1.0 + 1e-6
    assert fp16["model_mb"] < fp32["model_mb"]
    for row in (fp32, fp16):
        assert set(row["throughput"]) == {"1", "16"}
        assert all(t["sentences_per_s"] > 0 and t["ms_per_call"] > 0 for t in row["throughput"].values())
        scores = row["tatoeba"]
        assert set(scores["per_language"]) == {"fra", "deu"}
        assert 0.0 <= scores["xx_en"] <= 100.0 and 0.0 <= scores["en_xx"] <= 100.0
    # fp16 drifts so little on this model that the nearest neighbours stay the same
    assert fp16["tatoeba"]["xx_en"] == pytest.approx(fp32["tatoeba"]["xx_en"], abs=0.5)


@needs_data
@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_cuda_without_onnxruntime_gpu_is_a_clear_error(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(repo), "--config", "tiny0@cuda", "--data-dir", str(DATA), "--out", str(tmp_path)]
    assert devices.main(argv) == 2
    assert "device 'cuda' requested but onnxruntime offers only" in capsys.readouterr().out
    assert not (tmp_path / "devices.json").exists()


def test_unknown_member_is_named(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no member 'nope' .*tiny0-fp16"):
        devices.load_member(repo, "nope")
