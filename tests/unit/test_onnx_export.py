"""ONNX export of one member: the graph contract, layer cutting, pooling, normalisation and parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import export.onnx_export as onnx_export
from export.onnx_export import ExportError, ExportParityError, export_member, multilingual_sentences
from export.tiny import TINY_MAX_LENGTH

TEXTS = [
    "Hello world.",
    "Die Katze schläft auf der warmen Fensterbank, während draußen der Regen fällt.",
    "Где ближайший вокзал?",
    "最近的火车站在哪里？",
]


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One checkpoint exported three ways: all layers, cut at layer 1, and without normalisation."""
    repo = tmp_path_factory.mktemp("export_repo")
    common = {"max_length": TINY_MAX_LENGTH, "base_model": "tiny"}
    export_member(tiny_checkpoint, repo, "full", layer=-1, **common)  # type: ignore[arg-type]
    export_member(tiny_checkpoint, repo, "cut1", layer=1, **common)  # type: ignore[arg-type]
    export_member(tiny_checkpoint, repo, "raw", normalize=False, **common)  # type: ignore[arg-type]
    return repo


def _session(repo: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(repo / "members" / name / "model.onnx"), providers=["CPUExecutionProvider"])


def _encode(checkpoint: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batch = AutoTokenizer.from_pretrained(checkpoint)(texts, padding=True, return_tensors="np")
    return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)


def _run(session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    (out,) = session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})
    return np.asarray(out)


def _torch_pooled(checkpoint: Path, ids: np.ndarray, mask: np.ndarray, layer: int) -> np.ndarray:
    """Mean of PyTorch's hidden_states[layer] over real tokens, written independently of the exporter."""
    model = AutoModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        hidden = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True
        ).hidden_states[layer]
    hidden_np = hidden.numpy()
    return np.stack([hidden_np[i, mask[i] == 1].mean(axis=0) for i in range(len(ids))])


def _member_json(repo: Path, name: str) -> dict[str, object]:
    return dict(json.loads((repo / "members" / name / "member.json").read_text()))


def test_graph_inputs_and_output_follow_the_contract(exported: Path) -> None:
    session = _session(exported, "full")
    inputs = {i.name: i for i in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for node in inputs.values():
        assert node.type == "tensor(int64)"
        assert all(isinstance(d, str) for d in node.shape), f"{node.name} axes must be dynamic: {node.shape}"
    (output,) = session.get_outputs()
    assert output.name == "sentence_embedding"
    assert output.type == "tensor(float)"
    assert isinstance(output.shape[0], str) and output.shape[1] == 32
    assert onnx.load(str(exported / "members" / "full" / "model.onnx")).opset_import[0].version >= 17


@pytest.mark.parametrize(("batch", "length"), [(1, 2), (1, TINY_MAX_LENGTH), (5, 17), (3, 64)])
def test_any_batch_size_and_length_runs(exported: Path, batch: int, length: int) -> None:
    rng = np.random.default_rng(batch * 1000 + length)
    ids = rng.integers(5, 500, size=(batch, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 0, 2
    out = _run(_session(exported, "full"), ids, np.ones_like(ids))
    assert out.shape == (batch, 32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_parity_is_recorded_and_small(exported: Path) -> None:
    for name in ("full", "cut1", "raw"):
        spec = _member_json(exported, name)
        diff = spec["parity_max_abs_diff"]
        assert isinstance(diff, float) and 0.0 <= diff < 1e-4, f"{name}: {diff}"
        assert (exported / "members" / name / "tokenizer.json").is_file()
    assert _member_json(exported, "full")["layer"] == 2
    assert _member_json(exported, "cut1")["layer"] == 1


def test_padding_does_not_change_an_embedding(exported: Path, tiny_checkpoint: Path) -> None:
    session = _session(exported, "full")
    ids, mask = _encode(tiny_checkpoint, TEXTS)
    assert (mask == 0).any(), "the batch must contain padding for this test to mean anything"
    batched = _run(session, ids, mask)
    for row in range(len(TEXTS)):
        alone_ids, alone_mask = _encode(tiny_checkpoint, [TEXTS[row]])
        np.testing.assert_allclose(_run(session, alone_ids, alone_mask)[0], batched[row], atol=1e-5)


def test_gelu_is_fused_into_one_node_per_layer_and_parity_holds(exported: Path, tiny_checkpoint: Path) -> None:
    graph = onnx.load(str(exported / "members" / "full" / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert "Erf" not in ops  # the five-node GELU is gone...
    assert ops.count("BiasGelu") == 2  # ...one fused node per layer of the 2-layer model, as member.json says
    assert _member_json(exported, "full")["graph_fusions"] == {"BiasGelu": 2}
    assert _member_json(exported, "cut1")["graph_fusions"] == {"BiasGelu": 1}
    ids, mask = _encode(tiny_checkpoint, TEXTS)
    want = _torch_pooled(tiny_checkpoint, ids, mask, layer=2)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(_run(_session(exported, "full"), ids, mask), want, atol=1e-5)


def test_cut_graph_is_smaller_and_equals_hidden_state_one(exported: Path, tiny_checkpoint: Path) -> None:
    full = onnx.load(str(exported / "members" / "full" / "model.onnx")).graph
    cut = onnx.load(str(exported / "members" / "cut1" / "model.onnx")).graph

    def n_params(graph: onnx.GraphProto) -> int:
        return sum(int(np.prod(t.dims)) for t in graph.initializer)

    assert len(cut.node) < len(full.node)
    assert n_params(cut) < n_params(full)

    ids, mask = _encode(tiny_checkpoint, TEXTS)
    want = _torch_pooled(tiny_checkpoint, ids, mask, layer=1)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(_run(_session(exported, "cut1"), ids, mask), want, atol=1e-5)
    last = _torch_pooled(tiny_checkpoint, ids, mask, layer=2)
    assert not np.allclose(_run(_session(exported, "cut1"), ids, mask), last / np.linalg.norm(last, axis=1)[:, None])


def test_normalize_flag(exported: Path, tiny_checkpoint: Path) -> None:
    ids, mask = _encode(tiny_checkpoint, TEXTS)
    raw = _run(_session(exported, "raw"), ids, mask)
    normalized = _run(_session(exported, "full"), ids, mask)
    assert _member_json(exported, "raw")["normalize"] is False
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw, _torch_pooled(tiny_checkpoint, ids, mask, layer=2), atol=1e-5)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), normalized, atol=1e-5)


def test_a_wrong_graph_fails_parity_and_leaves_nothing(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An off-by-one cut (a real bug class) must be caught: parity compares against the uncut model."""
    real_truncate = onnx_export.truncate_layers

    def off_by_one(model: torch.nn.Module, layer: int) -> None:
        real_truncate(model, layer - 1)

    monkeypatch.setattr(onnx_export, "truncate_layers", off_by_one)
    with pytest.raises(ExportParityError, match=r"member 'broken'.*above tolerance"):
        export_member(tiny_checkpoint, tmp_path, "broken", max_length=TINY_MAX_LENGTH, base_model="tiny")
    assert list((tmp_path / "members").iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": 3}, r"layer 3 out of range for a 2-layer encoder"),
        ({"layer": -4}, r"layer -4 out of range"),
        ({"max_length": 512}, r"max_length 512 outside 1\.\.128"),
        ({"name": "../evil"}, r"member name '\.\./evil' must match"),
        ({"parity_texts": ["only one"]}, r"at least 2 texts"),
    ],
)
def test_bad_requests_are_refused_clearly(
    tiny_checkpoint: Path, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"max_length": TINY_MAX_LENGTH, "base_model": "tiny", "name": "m", **kwargs}
    name = str(args.pop("name"))
    with pytest.raises(ExportError, match=message):
        export_member(tiny_checkpoint, tmp_path, name, **args)  # type: ignore[arg-type]


def test_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="checkpoint folder does not exist"):
        export_member(tmp_path / "nope", tmp_path, "m", base_model="x")


def test_parity_texts_are_real_and_multilingual() -> None:
    texts = multilingual_sentences()
    assert len(texts) >= 20
    assert any(any("\u0400" <= ch <= "\u04ff" for ch in t) for t in texts), "expected Cyrillic text"
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts), "expected CJK text"
