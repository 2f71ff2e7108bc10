"""int8 and fp16 copies of a member: the new folder, its member.json, its parity check, refusals, serving it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import export.__main__ as export_cli
import export.quantize as quantize
from export.quantize import QuantizeError, QuantizeParityError, quantize_member
from export.repository_writer import write_ensemble
from service.config import Settings
from service.engine import Engine
from service.repository import MemberSpec, load_repository, read_json, sha256_file, write_json_atomic

TEXTS = ["Where is the nearest train station?", "Где ближайший вокзал?", "最近的火车站在哪里？", "Yes."]


def _spec(repo: Path, name: str) -> MemberSpec:
    path = repo / "members" / name / "member.json"
    return MemberSpec.from_json(read_json(path), str(path))


def _members(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "members").iterdir())


@pytest.fixture
def repo(tiny_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny repository (tiny0 cut at layer 1, tiny1 full), free to change."""
    return Path(shutil.copytree(tiny_repo, tmp_path / "repo"))


@pytest.fixture(scope="module")
def quantized(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny repository plus tiny0-int8, quantised once for the read-only tests."""
    repo = Path(shutil.copytree(tiny_repo, tmp_path_factory.mktemp("quantized") / "repo"))
    quantize_member(repo, "tiny0")
    return repo


def test_member_json_records_source_and_parity(quantized: Path) -> None:
    source, spec = _spec(quantized, "tiny0"), _spec(quantized, "tiny0-int8")
    folder = quantized / "members" / "tiny0-int8"
    assert spec.name == "tiny0-int8"
    assert spec.onnx_sha256 == sha256_file(folder / "model.onnx") != source.onnx_sha256
    assert (folder / "tokenizer.json").read_bytes() == (quantized / "members" / "tiny0" / "tokenizer.json").read_bytes()
    assert spec.tokenizer_sha256 == source.tokenizer_sha256
    for field in ("dim", "layer", "max_length", "text_prefix", "normalize", "base_model", "tasks", "training"):
        assert getattr(spec, field) == getattr(source, field), field
    q = spec.quantization
    assert q["mode"] == "int8-dynamic" and q["source_member"] == "tiny0" and q["per_channel"] is True
    assert q["source_sha256"] == source.onnx_sha256
    # int8 loses something (min < 1), but little on this model; the mean cannot be below the min
    assert 0.99 < q["min_cosine"] <= q["mean_cosine"] < 1.0
    assert q["parity_texts"] >= 20
    assert spec.scores == {}
    assert _members(quantized) == ["tiny0", "tiny0-int8", "tiny1"], "no staging folder may be left behind"


def test_fp16_member_halves_the_graph_and_keeps_the_contract(repo: Path) -> None:
    """fp16 weights and ops inside, int64 inputs and a float32 output outside, parity near 1 on the CPU."""
    spec = quantize_member(repo, "tiny0", mode="fp16")
    assert spec.name == "tiny0-fp16"
    q = spec.quantization
    assert q["mode"] == "fp16" and q["per_channel"] is None and q["source_member"] == "tiny0"
    assert 0.999 < q["min_cosine"] <= q["mean_cosine"] <= 1.0 + 1e-9
    fp32_path, fp16_path = (repo / "members" / name / "model.onnx" for name in ("tiny0", "tiny0-fp16"))
    graph = onnx.load(str(fp16_path)).graph
    float_kinds = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    kinds = {t.data_type for t in graph.initializer if len(t.dims) == 2 and t.data_type in float_kinds}
    assert kinds == {onnx.TensorProto.FLOAT16}, "every weight matrix must be fp16"
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.INT64] * 2
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    assert fp16_path.stat().st_size < 0.75 * fp32_path.stat().st_size  # weights halve; graph text does not
    assert load_repository(repo).fingerprint  # the new member does not break the repository
    write_ensemble(repo, ["tiny0-fp16"])
    assert [m.spec.name for m in load_repository(repo).members] == ["tiny0-fp16"]


def test_graph_holds_int8_weights(quantized: Path) -> None:
    fp32 = onnx.load(str(quantized / "members" / "tiny0" / "model.onnx")).graph
    int8 = onnx.load(str(quantized / "members" / "tiny0-int8" / "model.onnx")).graph

    def int8_weights(graph: onnx.GraphProto) -> int:
        return sum(1 for t in graph.initializer if t.data_type == onnx.TensorProto.INT8)

    assert int8_weights(fp32) == 0
    assert int8_weights(int8) > 0
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in int8.node}
    assert [i.name for i in int8.input] == [i.name for i in fp32.input]
    assert [o.name for o in int8.output] == ["sentence_embedding"]


def test_an_engine_serves_the_quantized_member(quantized: Path, tmp_path: Path) -> None:
    """ensemble.json pointed at the int8 member passes load_repository, and the engine embeds with it."""
    repo = Path(shutil.copytree(quantized, tmp_path / "repo"))
    write_ensemble(repo, ["tiny0-int8", "tiny1"])
    loaded = load_repository(repo)
    assert [m.spec.name for m in loaded.members] == ["tiny0-int8", "tiny1"]
    assert loaded.fingerprint != load_repository(quantized).fingerprint

    async def embed(root: Path, index: Path) -> np.ndarray:
        engine = Engine(Settings.model_validate({"repo": root, "index": index}))
        await engine.start()
        try:
            return (await engine.embed(TEXTS)).vectors
        finally:
            await engine.stop()

    int8 = asyncio.run(embed(repo, tmp_path / "index-int8"))
    fp32 = asyncio.run(embed(quantized, tmp_path / "index-fp32"))  # ensemble tiny0, tiny1
    assert int8.shape == fp32.shape == (len(TEXTS), 64)
    assert np.isfinite(int8).all()
    first, first_fp32 = int8[:, :32], fp32[:, :32]
    cosines = (first * first_fp32).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(first_fp32, axis=1)
    assert (cosines > 0.99).all()
    assert not np.array_equal(first, first_fp32), "the served member must be the int8 graph"
    np.testing.assert_allclose(int8[:, 32:], fp32[:, 32:], atol=1e-6)  # tiny1 is untouched


def test_cli_writes_a_named_member_and_prints_its_parity(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["quantize", "--repo", str(repo), "--member", "tiny1", "--name", "small", "--min-cosine", "0.99"]
    assert export_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "member small: int8-dynamic of tiny1, cosine to fp32 min" in out
    assert "--members small" in out
    assert _spec(repo, "small").quantization["source_member"] == "tiny1"
    assert _members(repo) == ["small", "tiny0", "tiny1"]


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert export_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_refuses_an_unknown_member(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli_error(["quantize", "--repo", str(repo), "--member", "nope"], capsys)
    assert "no member 'nope'" in err and "tiny0, tiny1" in err
    assert _members(repo) == ["tiny0", "tiny1"]


def test_cli_refuses_an_existing_name_unless_forced(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["quantize", "--repo", str(repo), "--member", "tiny0"]
    assert export_cli.main(argv) == 0
    target = repo / "members" / "tiny0-int8"
    (target / "note.txt").write_text("left by hand")
    assert "already exists (pass --force" in _cli_error(argv, capsys)
    assert (target / "note.txt").is_file(), "a refused run must not touch the existing member"
    # an fp32 member's name is taken too
    assert "member 'tiny0' already exists" in _cli_error([*argv[:-1], "tiny1", "--name", "tiny0"], capsys)
    assert export_cli.main([*argv, "--force"]) == 0
    assert not (target / "note.txt").exists(), "--force replaces the folder as a whole"
    assert _spec(repo, "tiny0-int8").onnx_sha256 == sha256_file(target / "model.onnx")


def test_cli_refuses_a_graph_onnx_cannot_load(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model.onnx that is not a graph (but matches its recorded sha256) is named, and nothing is written."""
    folder = repo / "members" / "tiny0"
    (folder / "model.onnx").write_bytes(b"this is not a protobuf")
    payload = read_json(folder / "member.json")
    payload["onnx_sha256"] = sha256_file(folder / "model.onnx")
    write_json_atomic(folder / "member.json", payload)
    err = _cli_error(["quantize", "--repo", str(repo), "--member", "tiny0"], capsys)
    assert "tiny0/model.onnx: not a loadable ONNX graph" in err
    assert _members(repo) == ["tiny0", "tiny1"]


def test_a_source_changed_after_export_is_refused(repo: Path) -> None:
    with open(repo / "members" / "tiny0" / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(QuantizeError, match=r"tiny0/model.onnx: sha256 does not match member.json"):
        quantize_member(repo, "tiny0")
    assert _members(repo) == ["tiny0", "tiny1"]


def test_a_quantized_member_is_not_quantized_again(quantized: Path) -> None:
    with pytest.raises(QuantizeError, match=r"'tiny0-int8' is already quantised \(int8-dynamic of 'tiny0'\)"):
        quantize_member(quantized, "tiny0-int8", "twice")
    assert not (quantized / "members" / "twice").exists()


def test_parity_below_the_threshold_is_refused_and_leaves_nothing(repo: Path) -> None:
    pattern = r"member 'tiny0-int8': int8 model\.onnx's min cosine .* below --min-cosine 1"
    with pytest.raises(QuantizeParityError, match=pattern):
        quantize_member(repo, "tiny0", min_cosine=1.0)
    assert _members(repo) == ["tiny0", "tiny1"]


def test_a_quantizer_that_breaks_the_graph_is_caught(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph with the right contract but other weights (tiny1's) must fail parity at the default threshold."""

    def wrong_graph(source: Path, target: Path) -> None:
        shutil.copyfile(repo / "members" / "tiny1" / "model.onnx", target)

    monkeypatch.setitem(quantize.CONVERTERS, "int8", wrong_graph)
    with pytest.raises(QuantizeParityError, match=r"below --min-cosine 0.98"):
        quantize_member(repo, "tiny0")
    assert _members(repo) == ["tiny0", "tiny1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "../escape"}, r"member name '../escape' must match"),
        ({"member": "../repo/members/tiny0"}, r"member '../repo/members/tiny0' must match"),
        ({"name": "tiny0"}, r"needs a new name, not the source's 'tiny0'"),
        ({"mode": "int4"}, r"mode 'int4' not in \('int8', 'fp16'\)"),
        ({"min_cosine": 0.0}, r"min cosine must be in \(0, 1\]"),
        ({"min_cosine": 1.5}, r"min cosine must be in \(0, 1\]"),
    ],
)
def test_bad_arguments_are_named(repo: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(QuantizeError, match=message):
        quantize_member(repo, **{"member": "tiny0", **kwargs})  # type: ignore[arg-type]
    assert _members(repo) == ["tiny0", "tiny1"]


def test_cli_defaults_match_the_library() -> None:
    """The CLI repeats the library's constants (to keep torch out of --help); they must not drift apart."""
    assert export_cli.QUANT_MODES == quantize.QUANT_MODES
    assert export_cli.DEFAULT_MIN_COSINE == quantize.DEFAULT_MIN_COSINE
    args = export_cli.build_parser().parse_args(["quantize", "--repo", "r", "--member", "m"])
    assert (args.mode, args.min_cosine, args.name, args.force) == ("int8", quantize.DEFAULT_MIN_COSINE, None, False)
