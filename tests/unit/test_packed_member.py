"""A packed member (several texts per graph row) embeds exactly what the padded member of the same checkpoint does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.onnx_export import export_member
from export.repository_writer import write_ensemble
from export.tiny import TINY_MAX_LENGTH
from service.encoders import OnnxEncoder, load_encoders
from service.encoders.packing import PACKED_INPUTS
from service.errors import StartupError
from service.repository import RepositoryError, load_repository

TEXTS = [
    "Hello world.",
    "Die Katze schläft auf der warmen Fensterbank, während draußen der Regen fällt und fällt und fällt.",
    "",
    "Где ближайший вокзал?",
    "最近的火车站在哪里？",
    "Yes.",
    "Le chat dort sur le rebord de la fenêtre.",
]


@pytest.fixture(scope="module")
def repo(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported twice: packed and padded, in one repository."""
    out = tmp_path_factory.mktemp("packed_repo")
    common = {"max_length": TINY_MAX_LENGTH, "base_model": "tiny", "text_prefix": "query: "}
    export_member(tiny_checkpoint, out, "packed", packed=True, **common)  # type: ignore[arg-type]
    export_member(tiny_checkpoint, out, "padded", **common)  # type: ignore[arg-type]
    write_ensemble(out, ["packed", "padded"], method="concat")
    return out


def test_packed_graph_takes_rows_of_texts_and_records_its_contract(repo: Path) -> None:
    spec = json.loads((repo / "members" / "packed" / "member.json").read_text())
    assert spec["graph_inputs"] == "packed" and spec["parity_max_abs_diff"] < 1e-5
    assert json.loads((repo / "members" / "padded" / "member.json").read_text())["graph_inputs"] == "padded"
    session = ort.InferenceSession(str(repo / "members" / "packed" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(PACKED_INPUTS)
    assert len(session.get_outputs()[0].shape) == 3


@pytest.mark.parametrize("pack_tokens", [1, 16, 40, 128])
def test_packed_vectors_equal_padded_ones_whatever_the_row_size(repo: Path, pack_tokens: int) -> None:
    """Rows of one text (1), rows a long text overflows (16), several texts per row (40, 128)."""
    packed, padded = load_encoders(load_repository(repo), device="cpu", threads=1, pack_tokens=pack_tokens)
    assert isinstance(packed, OnnxEncoder) and packed.packed and not getattr(padded, "packed", True)
    ids = packed.tokenizer.encode(TEXTS * 3)
    want = padded.forward(ids)
    got = packed.forward(ids)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(packed.forward(ids[1:2]), want[1:2], atol=1e-5)  # a batch of one


def test_warmup_calibrates_the_packed_calls_and_info_says_packed(repo: Path) -> None:
    encoder, _ = load_encoders(load_repository(repo), device="cpu", threads=1, pack_tokens=64)
    assert isinstance(encoder, OnnxEncoder)
    encoder.warmup()
    info = encoder.describe()
    assert info["graph_inputs"] == "packed" and info["pack_tokens"] == 64
    assert info["call_cost_s"]["per_token"] > 0


def test_member_json_and_graph_must_agree(repo: Path, tmp_path: Path) -> None:
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    spec_path = broken / "members" / "packed" / "member.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "graph_inputs": "padded"}))
    with pytest.raises(StartupError, match=r"graph_inputs 'padded'.*input_ids.*attention_mask"):
        load_encoders(load_repository(broken), device="cpu")
    spec_path.write_text(json.dumps({**spec, "graph_inputs": "rows"}))
    with pytest.raises(RepositoryError, match="graph_inputs 'rows' must be one of"):
        load_repository(broken)


def test_bad_pack_tokens_is_refused(repo: Path) -> None:
    with pytest.raises(StartupError, match="pack_tokens must be >= 1"):
        load_encoders(load_repository(repo), device="cpu", pack_tokens=0)


def test_the_ceiling_runs_a_packed_graph_one_text_per_row(repo: Path) -> None:
    """benchmarks.load.ceiling feeds a packed graph the padded graph's batches as one-text rows."""
    from benchmarks.load.ceiling import ort_ceiling

    texts = TEXTS * 10
    packed = ort_ceiling(repo / "members" / "packed", texts, prefix="query: ", max_length=TINY_MAX_LENGTH, threads=1)
    padded = ort_ceiling(repo / "members" / "padded", texts, prefix="query: ", max_length=TINY_MAX_LENGTH, threads=1)
    assert packed["sentences"] == padded["sentences"] == len(texts) and packed["sentences_per_s"] > 0
    assert packed["padding_share"] == padded["padding_share"]  # the same batches, the same shapes


@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_a_packed_member_quantises_and_still_packs(repo: Path, tmp_path: Path, mode: str) -> None:
    """The quantiser's parity check feeds a packed graph packed rows; the new member keeps the packed contract
    and embeds like the padded member quantised the same way."""
    from export.quantize import quantize_member

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    packed_q = quantize_member(copy, "packed", mode=mode)
    padded_q = quantize_member(copy, "padded", mode=mode)
    assert packed_q.graph_inputs == "packed" and padded_q.graph_inputs == "padded"
    assert packed_q.quantization is not None and packed_q.quantization["min_cosine"] > 0.98
    write_ensemble(copy, [f"packed-{mode}", f"padded-{mode}"], method="concat")
    packed, padded = load_encoders(load_repository(copy), device="cpu", threads=1, pack_tokens=40)
    assert isinstance(packed, OnnxEncoder) and packed.packed
    ids = packed.tokenizer.encode(TEXTS * 3)
    cosines = (packed.forward(ids) * padded.forward(ids)).sum(axis=1)
    assert cosines.min() > 0.98  # both graphs quantised alike; int8's activation scales differ per call


def test_the_packing_benchmark_runs_both_members_on_the_same_batches(repo: Path, tmp_path: Path) -> None:
    from benchmarks.load.packing import compare
    from export.repository_writer import write_ensemble

    padded, packed = tmp_path / "padded", tmp_path / "packed"
    for target, member in ((padded, "padded"), (packed, "packed")):
        shutil.copytree(repo, target)
        write_ensemble(target, [member], method="concat")
    result = compare(padded, packed, TEXTS * 4, batch=8, rows=[16, 64], trials=3)
    assert set(result["sentences_per_s"]) == {"padded", "packed16", "packed64"}
    assert all(rate > 0 for rate in result["sentences_per_s"].values()) and result["vs_padded"]["padded"] == 1.0
