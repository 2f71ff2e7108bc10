"""A member's packed graph (several texts per row, model.packed.onnx) embeds exactly what its model.onnx does."""

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
from service.repository import PACKED_ONNX, RepositoryError, load_repository, sha256_file

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
    """The tiny checkpoint exported with its packed twin ("both") and without ("plain"), in one repository."""
    out = tmp_path_factory.mktemp("packed_repo")
    common = {"max_length": TINY_MAX_LENGTH, "base_model": "tiny", "text_prefix": "query: "}
    export_member(tiny_checkpoint, out, "both", packed=True, **common)  # type: ignore[arg-type]
    export_member(tiny_checkpoint, out, "plain", **common)  # type: ignore[arg-type]
    write_ensemble(out, ["both", "plain"], method="concat")
    return out


def test_packed_export_keeps_the_padded_contract_graph_and_adds_a_packed_twin(repo: Path) -> None:
    both = json.loads((repo / "members" / "both" / "member.json").read_text())
    plain = json.loads((repo / "members" / "plain" / "member.json").read_text())
    assert both["packed_parity_max_abs_diff"] < 1e-5 and both["packed_onnx_sha256"]
    assert plain["packed_onnx_sha256"] is None and not (repo / "members" / "plain" / PACKED_ONNX).exists()
    assert both["onnx_sha256"] == plain["onnx_sha256"]  # model.onnx is the same padded graph either way
    cpu = ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(repo / "members" / "both" / PACKED_ONNX), providers=cpu)
    assert [i.name for i in session.get_inputs()] == list(PACKED_INPUTS)
    assert len(session.get_outputs()[0].shape) == 3
    padded = ort.InferenceSession(str(repo / "members" / "both" / "model.onnx"), providers=cpu)
    assert [i.name for i in padded.get_inputs()] == ["input_ids", "attention_mask"]


@pytest.mark.parametrize("pack_tokens", [1, 16, 40, 128])
def test_packed_vectors_equal_padded_ones_whatever_the_row_size(repo: Path, pack_tokens: int) -> None:
    """Rows of one text (1), rows a long text overflows (16), several texts per row (40, 128)."""
    packed, plain = load_encoders(load_repository(repo), device="cpu", threads=1, pack_tokens=pack_tokens)
    unpacked, _ = load_encoders(load_repository(repo), device="cpu", threads=1, pack_tokens=0)
    assert isinstance(packed, OnnxEncoder) and packed.packed and packed.path.name == PACKED_ONNX
    assert isinstance(unpacked, OnnxEncoder) and not unpacked.packed and unpacked.path.name == "model.onnx"
    assert isinstance(plain, OnnxEncoder) and not plain.packed  # no twin: model.onnx whatever pack_tokens says
    ids = packed.tokenizer.encode(TEXTS * 3)
    want = unpacked.forward(ids)
    got = packed.forward(ids)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(plain.forward(ids), want, atol=1e-5)
    np.testing.assert_allclose(packed.forward(ids[1:2]), want[1:2], atol=1e-5)  # a batch of one


def test_warmup_calibrates_the_packed_calls_and_info_says_packed(repo: Path) -> None:
    encoder, plain = load_encoders(load_repository(repo), device="cpu", threads=1, pack_tokens=64)
    assert isinstance(encoder, OnnxEncoder)
    encoder.warmup()
    info = encoder.describe()
    assert info["packed"] is True and info["pack_tokens"] == 64 and info["model"].endswith(PACKED_ONNX)
    assert info["call_cost_s"]["per_token"] > 0
    assert plain.describe()["packed"] is False and plain.describe()["pack_tokens"] is None


def test_a_packed_twin_is_hash_checked_and_must_take_packed_rows(repo: Path, tmp_path: Path) -> None:
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    twin = broken / "members" / "both" / PACKED_ONNX
    twin.write_bytes(twin.read_bytes() + b"\0")
    with pytest.raises(RepositoryError, match=r"model\.packed\.onnx: sha256 does not match"):
        load_repository(broken)
    shutil.copyfile(broken / "members" / "both" / "model.onnx", twin)  # a padded graph where the twin should be
    spec_path = broken / "members" / "both" / "member.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "packed_onnx_sha256": sha256_file(twin)}))
    with pytest.raises(StartupError, match=r"model inputs are .*attention_mask.*but a packed graph needs"):
        load_encoders(load_repository(broken), device="cpu")
    assert load_encoders(load_repository(broken), device="cpu", pack_tokens=0)  # not packing: the twin is unused
    twin.unlink()
    with pytest.raises(RepositoryError, match=r"model\.packed\.onnx: file missing"):
        load_repository(broken)


def test_bad_pack_tokens_is_refused(repo: Path) -> None:
    with pytest.raises(StartupError, match="pack_tokens must be >= 0"):
        load_encoders(load_repository(repo), device="cpu", pack_tokens=-1)


@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_a_packed_member_quantises_both_graphs(repo: Path, tmp_path: Path, mode: str) -> None:
    """The quantiser converts the packed twin too and checks it with packed rows; packed and unpacked runs
    of the quantised member agree."""
    from export.quantize import quantize_member

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    quantized = quantize_member(copy, "both", mode=mode)
    source_twin = load_repository(repo).members[0].spec.packed_onnx_sha256
    assert quantized.packed_onnx_sha256 not in (None, source_twin)
    assert quantized.quantization is not None and quantized.quantization["min_cosine"] > 0.98
    assert quantize_member(copy, "plain", mode=mode).packed_onnx_sha256 is None
    write_ensemble(copy, [f"both-{mode}"], method="concat")
    (packed,) = load_encoders(load_repository(copy), device="cpu", threads=1, pack_tokens=40)
    (unpacked,) = load_encoders(load_repository(copy), device="cpu", threads=1, pack_tokens=0)
    assert isinstance(packed, OnnxEncoder) and packed.packed
    ids = packed.tokenizer.encode(TEXTS * 3)
    cosines = (packed.forward(ids) * unpacked.forward(ids)).sum(axis=1)
    assert cosines.min() > 0.98  # int8's activation scales differ per call, so not bit-equal


def test_the_packing_benchmark_runs_both_graphs_on_the_same_batches(repo: Path, tmp_path: Path) -> None:
    from benchmarks.load.packing import compare

    result = compare(repo, TEXTS * 4, batch=8, rows=[16, 64], trials=3)
    assert set(result["sentences_per_s"]) == {"padded", "packed16", "packed64"}
    assert all(rate > 0 for rate in result["sentences_per_s"].values()) and result["vs_padded"]["padded"] == 1.0
    plain = tmp_path / "plain"
    shutil.copytree(repo, plain)
    write_ensemble(plain, ["plain"], method="concat")
    with pytest.raises(StartupError, match="no packed graph"):
        compare(plain, TEXTS, batch=4, rows=[16], trials=1)


def test_export_cli_writes_the_packed_twin_unless_told_not_to() -> None:
    from export.__main__ import build_parser

    parser = build_parser()
    member = ["member", "--checkpoint", "ckpt", "--out", "repo", "--name", "m"]
    assert parser.parse_args(["base"]).packed is True and parser.parse_args(member).packed is True
    assert parser.parse_args(["base", "--no-packed"]).packed is False
    assert parser.parse_args([*member, "--no-packed"]).packed is False


def test_stop_12_member_json_still_loads_and_its_packed_model_onnx_is_named(repo: Path, tmp_path: Path) -> None:
    """Members written before the twin existed carry `graph_inputs`: "padded" ones load as they are; a
    "packed" one (model.onnx itself packed) is refused with what to do instead."""
    old = tmp_path / "repo"
    shutil.copytree(repo, old)
    spec_path = old / "members" / "plain" / "member.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "graph_inputs": "padded"}))
    assert load_repository(old).members[1].spec.packed_onnx_sha256 is None
    spec_path.write_text(json.dumps({**spec, "graph_inputs": "packed"}))
    with pytest.raises(RepositoryError, match=r"graph_inputs 'packed'.*re-export the member"):
        load_repository(old)


def test_token_counts_show_what_packing_saves_over_padding(repo: Path) -> None:
    """Served work only (warm-up forgotten); real tokens alike both ways, computed ones fewer when packed."""
    kw = {"device": "cpu", "threads": 1, "bucketing": "none"}
    packed, _ = load_encoders(load_repository(repo), pack_tokens=64, **kw)  # type: ignore[arg-type]
    padded, _ = load_encoders(load_repository(repo), pack_tokens=0, **kw)  # type: ignore[arg-type]
    ids = packed.tokenizer.encode(TEXTS * 3)
    real = sum(len(row) for row in ids)
    for encoder in (packed, padded):
        encoder.warmup()
        assert encoder.tokens.snapshot() == (0, 0)
        encoder.forward(ids)
    (packed_real, packed_computed), (padded_real, padded_computed) = packed.tokens.snapshot(), padded.tokens.snapshot()
    assert packed_real == padded_real == real
    assert padded_computed == len(ids) * max(len(row) for row in ids)  # one call, padded to the longest text
    assert real <= packed_computed < padded_computed
