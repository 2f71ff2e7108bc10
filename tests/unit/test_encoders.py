"""Encoders on a real tiny repository: tokenizer staging, ORT parity, padding, sharing, contract checks."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tokenizers
from onnx import TensorProto, helper

from service.encoders import OnnxEncoder, Tokenizer, load_encoders
from service.encoders import onnx as onnx_backend
from service.encoders.fake import FakeEncoder, byte_tokenizer
from service.errors import StartupError
from service.repository import Member, MemberSpec, Repository, load_repository

TEXTS = [
    "Hello world.",
    "Der schnelle braune Fuchs springt über den faulen Hund, und dann noch ein bisschen weiter.",
    "",
    "Le chat dort.",
]


@pytest.fixture(scope="module")
def repo(tiny_repo: Path) -> Repository:
    return load_repository(tiny_repo)


@pytest.fixture(scope="module")
def encoders(repo: Repository) -> list[OnnxEncoder]:
    loaded = load_encoders(repo, device="cpu", threads=1)
    assert all(isinstance(e, OnnxEncoder) for e in loaded)
    return loaded  # type: ignore[return-value]  # checked just above


def tokenizer_of(repo: Repository, prefix: str = "", max_length: int = 128) -> Tokenizer:
    m = repo.members[0]
    return Tokenizer(m.tokenizer_path, prefix, max_length, m.spec.tokenizer_sha256)


def test_tokenizer_adds_specials_truncates_keeping_eos_and_prepends_prefix(repo: Repository) -> None:
    tok = tokenizer_of(repo, max_length=8)
    bos, eos = tok.encode([""])[0]
    long_ids, short_ids = tok.encode(["word " * 50, "hi"])
    assert len(long_ids) == 8 and long_ids[0] == bos and long_ids[-1] == eos
    assert short_ids[0] == bos and short_ids[-1] == eos and len(short_ids) < 8
    assert tok.pad_id == 1  # XLM-R's <pad>, which the graph's position ids depend on

    prefixed = tokenizer_of(repo, prefix="query: ")
    plain = tokenizer_of(repo)
    assert prefixed.encode(["hi"]) == plain.encode(["query: hi"]) != plain.encode(["hi"])
    assert len({prefixed.key, plain.key, tok.key}) == 3


def test_tokenizer_file_that_is_not_a_tokenizer_is_a_startup_error(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(StartupError, match=r"tokenizer\.json.*not a loadable"):
        Tokenizer(bad, "", 16, "0" * 64)


def test_members_sharing_a_tokenizer_share_one_object(repo: Repository, encoders: list[OnnxEncoder]) -> None:
    assert [e.name for e in encoders] == repo.ensemble.members
    assert [e.dim for e in encoders] == [m.spec.dim for m in repo.members]
    assert encoders[0].tokenizer is encoders[1].tokenizer


def test_output_equals_the_raw_onnxruntime_session(encoders: list[OnnxEncoder]) -> None:
    for enc in encoders:
        ids = enc.tokenizer.encode(TEXTS)
        out = enc.forward(ids)
        assert out.dtype == np.float32 and out.shape == (len(TEXTS), enc.dim)
        longest = max(map(len, ids))
        input_ids = np.array([row + [enc.tokenizer.pad_id] * (longest - len(row)) for row in ids], dtype=np.int64)
        mask = np.array([[1] * len(row) + [0] * (longest - len(row)) for row in ids], dtype=np.int64)
        raw = ort.InferenceSession(str(enc.path), providers=["CPUExecutionProvider"])
        (expected,) = raw.run(["sentence_embedding"], {"input_ids": input_ids, "attention_mask": mask})
        np.testing.assert_allclose(out, expected, atol=1e-5)
        assert not np.allclose(out[0], out[1], atol=1e-3)  # different texts, different vectors


def test_padding_does_not_change_an_embedding(encoders: list[OnnxEncoder]) -> None:
    for enc in encoders:
        ids = enc.tokenizer.encode(TEXTS)
        batched = enc.forward(ids)
        alone = np.concatenate([enc.forward([row]) for row in ids])
        np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_concurrent_forward_from_threads_matches_serial(encoders: list[OnnxEncoder]) -> None:
    enc = encoders[1]
    batches = [enc.tokenizer.encode(TEXTS[i:] + TEXTS[:i]) for i in range(len(TEXTS))] * 3
    serial = [enc.forward(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(enc.forward, batches))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_warmup_and_describe(encoders: list[OnnxEncoder]) -> None:
    enc = encoders[0]
    enc.warmup()
    info = enc.describe()
    assert info["provider"] == "CPUExecutionProvider"
    assert info["intra_op_threads"] == 1 and info["inter_op_threads"] == 1
    assert info["tokenizer_key"] == enc.tokenizer.key
    assert enc.forward([]).shape == (0, enc.dim)


def write_graph(
    path: Path,
    *,
    inputs: tuple[tuple[str, int], ...] = (
        ("input_ids", TensorProto.INT64),
        ("attention_mask", TensorProto.INT64),
    ),
    output: str = "sentence_embedding",
    dim: int = 32,
) -> None:
    """A small valid graph: embedding lookup of input_ids, mean over the sequence -> [batch, dim]."""
    vocab = tokenizers.Tokenizer.from_file(str(path.parent / "tokenizer.json")).get_vocab_size()
    table = helper.make_tensor(
        "table", TensorProto.FLOAT, [vocab, dim], np.random.default_rng(0).random(vocab * dim).tolist()
    )
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
        helper.make_node("ReduceMean", ["tokens"], [output], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "contract-test",
        [helper.make_tensor_value_info(name, dtype, ["batch", "seq"]) for name, dtype in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", dim])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def member_with(repo: Repository, directory: Path, dim: int = 32) -> Member:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo.members[0].tokenizer_path, directory / "tokenizer.json")
    spec = MemberSpec(
        name="probe",
        base_model="test",
        dim=dim,
        onnx_sha256="unchecked",
        tokenizer_sha256=repo.members[0].spec.tokenizer_sha256,
    )
    return Member(spec=spec, directory=directory)


def test_a_graph_that_meets_the_contract_loads(repo: Repository, tmp_path: Path) -> None:
    member = member_with(repo, tmp_path / "good")
    write_graph(member.onnx_path)
    enc = OnnxEncoder(member, device="cpu")
    enc.warmup()
    assert enc.forward(enc.tokenizer.encode(["a", "b c"])).shape == (2, 32)


@pytest.mark.parametrize(
    ("graph", "spec_dim", "message"),
    [
        (
            dict(inputs=(("input_ids", TensorProto.INT64), ("token_type_ids", TensorProto.INT64))),
            32,
            "model inputs are",
        ),
        (
            dict(inputs=(("input_ids", TensorProto.INT32), ("attention_mask", TensorProto.INT64))),
            32,
            r"input input_ids is tensor\(int32\)",
        ),
        (dict(output="last_hidden_state"), 32, "model outputs are"),
        (dict(dim=16), 32, "has dim 16 but member.json says 32"),
    ],
)
def test_a_graph_off_contract_is_a_startup_error_naming_the_file(
    repo: Repository, tmp_path: Path, graph: dict[str, object], spec_dim: int, message: str
) -> None:
    member = member_with(repo, tmp_path / "bad", dim=spec_dim)
    write_graph(member.onnx_path, **graph)  # type: ignore[arg-type]  # parametrised keyword arguments
    with pytest.raises(StartupError, match=message) as err:
        OnnxEncoder(member, device="cpu")
    assert str(member.onnx_path) in str(err.value)


def test_unreadable_model_is_a_startup_error(repo: Repository, tmp_path: Path) -> None:
    member = member_with(repo, tmp_path / "corrupt")
    member.onnx_path.write_bytes(b"this is not a protobuf")
    with pytest.raises(StartupError, match="cannot load"):
        OnnxEncoder(member, device="cpu")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_cuda_requested_without_cuda_is_a_startup_error(repo: Repository) -> None:
    with pytest.raises(StartupError, match="device 'cuda' requested"):
        OnnxEncoder(repo.members[0], device="cuda")


def test_cuda_libraries_are_preloaded_once_and_only_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """With onnxruntime-gpu, pip-installed CUDA/cuDNN must be loaded before the first CUDA session.

    This machine has no GPU, so onnxruntime's answers about CUDA are replaced; what is checked is the
    decision: preload for cuda and auto-with-CUDA, once per process, never for cpu or a CPU-only runtime.
    """
    calls: list[int] = []
    monkeypatch.setattr(onnx_backend, "_preloaded", False)
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_backend.choose_providers("auto", Path("m")) == ["CPUExecutionProvider"]
    assert onnx_backend.choose_providers("cpu", Path("m")) == ["CPUExecutionProvider"]
    assert calls == []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_backend.choose_providers("cpu", Path("m")) == ["CPUExecutionProvider"]
    assert calls == []
    for device in ("auto", "cuda", "cuda"):
        assert onnx_backend.choose_providers(device, Path("m")) == ["CUDAExecutionProvider", "CPUExecutionProvider"]  # type: ignore[arg-type]
    assert calls == [1]


def test_a_failing_preload_does_not_stop_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(onnx_backend, "_preloaded", False)
    monkeypatch.setattr(ort, "preload_dlls", broken, raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_backend.choose_providers("auto", Path("m")) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_fake_encoder_is_deterministic_unit_norm_and_counts_calls() -> None:
    tok = byte_tokenizer(max_length=16)
    a, b = FakeEncoder("a", 8, tok), FakeEncoder("b", 8, tok)
    ids = tok.encode(["hello", "world", "hello"])
    out = a.forward(ids)
    assert out.shape == (3, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[1])
    np.testing.assert_array_equal(out, FakeEncoder("a", 8, tok).forward(ids))
    assert not np.allclose(out, b.forward(ids))
    assert (a.calls, a.rows) == (1, 3)
    long_ids = tok.encode(["x" * 100])[0]
    assert len(long_ids) == 16 and long_ids[-1] == tok.encode([""])[0][-1]
