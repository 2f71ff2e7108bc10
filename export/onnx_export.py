"""Export one encoder to an ONNX repository member and prove the graph matches PyTorch.

The graph holds everything between token ids and the sentence vector (encoder up to the chosen
layer, masked mean pooling, optional L2 normalisation), so the online service needs onnxruntime and a
tokenizer only. Layers above the pooled one are removed before export: XTREME-style retrieval pools a
middle layer, and carrying unused layers would cost latency for nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.graph_fusion import fuse_gelu
from export.packed_export import PackedPooledEncoder, example_feed, packed_parity, unpadded_rows
from export.packed_export import dynamic_shapes as packed_dynamic_shapes
from service.encoders.onnx import pad_batch
from service.repository import PACKED_ONNX, MemberSpec, sha256_file, write_json_atomic

OPSET = 18  # the dynamo exporter's minimum; anything >= 17 serves LayerNormalization natively
OUTPUT_NAME = "sentence_embedding"
# A member name becomes a folder name and a key in metrics/logs: keep it to a safe, portable alphabet.
MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Languages for parity texts and tiny-tokenizer training: several scripts (Latin, Cyrillic, Arabic,
# Devanagari, CJK) so tokenisation lengths differ and padding masks really matter.
PARITY_LANGUAGES = ("deu", "fra", "spa", "rus", "ara", "hin", "cmn", "jpn", "tur", "swh")
_FALLBACK_SENTENCES = (
    "The cat sleeps on the warm windowsill.",
    "Die Katze schläft auf der warmen Fensterbank.",
    "Le chat dort sur le rebord de fenêtre chaud.",
    "El gato duerme en el alféizar cálido.",
    "Кошка спит на тёплом подоконнике.",
    "القطة تنام على حافة النافذة الدافئة.",
    "बिल्ली गर्म खिड़की पर सोती है।",
    "猫在温暖的窗台上睡觉。",
    "猫は暖かい窓辺で寝ています。",
    "Kedi sıcak pencere pervazında uyuyor.",
    "Where is the nearest train station?",
    "Wo ist der nächste Bahnhof?",
    "Où est la gare la plus proche ?",
    "¿Dónde está la estación de tren más cercana?",
    "Где ближайший вокзал?",
    "أين أقرب محطة قطار؟",
    "सबसे नज़दीकी रेलवे स्टेशन कहाँ है?",
    "最近的火车站在哪里？",
    "一番近い駅はどこですか。",
    "En yakın tren istasyonu nerede?",
    "I have never seen such a beautiful sunset in my whole life, said the old fisherman.",
    "Ich habe in meinem ganzen Leben noch nie einen so schönen Sonnenuntergang gesehen.",
    "Yes.",
    "Да.",
)


def data_dir() -> Path:
    """Shared data folder: `XRET_DATA_DIR`, else `shared/data` beside the checkout (the service's default)."""
    configured = os.environ.get("XRET_DATA_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"


def multilingual_sentences(per_language: int = 3, languages: tuple[str, ...] = PARITY_LANGUAGES) -> list[str]:
    """Real Tatoeba sentences (with their English side), or a built-in list when the data is absent.

    Real sentences matter for parity: random ids never hit the tokenizer, and uniform lengths would hide
    masking bugs.
    """
    tatoeba = data_dir() / "tatoeba" / "v1"
    sentences: list[str] = []
    for lang in languages:
        for side in (lang, "eng"):
            path = tatoeba / f"tatoeba.{lang}-eng.{side}"
            if path.is_file():
                with open(path, encoding="utf-8") as handle:
                    lines = (line.strip() for line in handle)
                    sentences.extend(_take_nonempty(lines, per_language))
    return sentences or list(_FALLBACK_SENTENCES)


def _take_nonempty(lines: Iterator[str], n: int) -> list[str]:
    taken: list[str] = []
    for line in lines:
        if len(taken) >= n:
            break
        if line:
            taken.append(line)
    return taken


class PooledEncoder(nn.Module):
    """Encoder up to a layer + masked mean pooling (+ L2 norm): the exact computation the graph holds.

    The encoder passed in must already have its upper layers removed (see `truncate_layers`); pooling the
    last hidden state of a truncated encoder equals pooling `hidden_states[layer]` of the full one.
    """

    def __init__(self, encoder: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # clamp: an all-padding row (never produced by a tokenizer, but cheap to guard) must not divide by 0
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


class ExportError(Exception):
    """The export was asked for something impossible (bad layer, missing tokenizer, ...)."""


class ExportParityError(ExportError):
    """The ONNX graph (or the tokenizer file the service will use) disagrees with PyTorch."""


def resolve_layer(layer: int, num_layers: int) -> int:
    """`hidden_states` index semantics: 0 = embeddings, num_layers (or -1) = last layer, -2 = one below."""
    resolved = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= resolved <= num_layers:
        raise ExportError(f"layer {layer} out of range for a {num_layers}-layer encoder (use 0..{num_layers} or -1)")
    return resolved


# Model types whose position ids start after padding_idx (fairseq heritage), so they hold fewer tokens
# than max_position_embeddings.
_POSITION_OFFSET_TYPES = ("xlm-roberta", "roberta", "camembert")


def position_offset(config: Any) -> int:
    """Index of the first position embedding a text uses (fairseq-style models skip padding_idx + 1)."""
    return int(config.pad_token_id) + 1 if config.model_type in _POSITION_OFFSET_TYPES else 0


def check_max_length(config: Any, max_length: int) -> None:
    """Refuse a max_length the position table cannot hold: the service would crash on the first long text."""
    capacity = int(config.max_position_embeddings) - position_offset(config)
    if not 1 <= max_length <= capacity:
        raise ExportError(f"max_length {max_length} outside 1..{capacity}, the tokens this encoder's positions hold")


def truncate_layers(model: nn.Module, layer: int) -> None:
    """Drop encoder layers above `layer` so they are not in the exported graph at all."""
    model.encoder.layer = model.encoder.layer[:layer]  # type: ignore[union-attr,index]
    model.config.num_hidden_layers = layer  # type: ignore[union-attr]


def export_member(
    checkpoint: Path | str,
    out_dir: Path,
    name: str,
    *,
    layer: int = -1,
    normalize: bool = True,
    max_length: int = 512,
    text_prefix: str = "",
    tasks: list[str] | None = None,
    base_model: str,
    parity_texts: list[str] | None = None,
    tolerance: float = 1e-4,
    training: dict[str, Any] | None = None,
    fuse: bool = True,
    packed: bool = False,
) -> MemberSpec:
    """Export `checkpoint` (an HF encoder folder) as member `name` of the repository at `out_dir`.

    `fuse` rewrites the graph's GELU into fused nodes (export/graph_fusion.py) before parity is checked.
    `packed` also writes `model.packed.onnx`, the same weights in a graph that takes several texts per row
    (export/packed_export.py), which the service runs instead when it packs; its parity is checked text by
    text against the same PyTorch reference. model.onnx stays the repository contract's padded graph.

    The member is built in a staging folder and moved into `members/<name>` only after parity passed, so a
    failed export never leaves a half-valid member behind. Parity compares onnxruntime against the *uncut*
    PyTorch model's `hidden_states[layer]`, which also proves that cutting layers changed nothing below.
    """
    from transformers import AutoModel

    checkpoint = Path(checkpoint)
    if not MEMBER_NAME.match(name):
        raise ExportError(f"member name {name!r} must match {MEMBER_NAME.pattern}")
    if not checkpoint.is_dir():
        raise ExportError(f"{checkpoint}: checkpoint folder does not exist")
    if tolerance < 0:
        raise ExportError(f"tolerance must be >= 0, got {tolerance}")
    members_dir = Path(out_dir) / "members"
    with staged_member(members_dir, name) as staging:
        model = AutoModel.from_pretrained(checkpoint, attn_implementation="eager").float().eval()
        resolved = resolve_layer(layer, int(model.config.num_hidden_layers))
        check_max_length(model.config, max_length)
        tokenizer_path = _write_tokenizer_json(checkpoint, staging / "tokenizer.json")
        texts = [text_prefix + t for t in (parity_texts or multilingual_sentences())]
        if len(texts) < 2:
            # torch.export specialises a dimension seen as 1, which would fix the graph's batch size
            raise ExportError("parity needs at least 2 texts")
        batches = _tokenize_batches(tokenizer_path, checkpoint, texts, max_length)
        with torch.no_grad():
            reference = [_reference_embeddings(model, ids, mask, resolved, normalize) for ids, mask in batches]
        truncate_layers(model, resolved)
        onnx_path = staging / "model.onnx"
        pad_id = _pad_id(tokenizer_path)
        ids, mask = (torch.from_numpy(a[:2]) for a in batches[0])
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        feed = {"input_ids": ids, "attention_mask": mask}
        _export_graph(PooledEncoder(model, normalize).eval(), feed, onnx_path, shapes)
        heads, hidden = int(model.config.num_attention_heads), int(model.config.hidden_size)
        fusions = fuse_gelu(onnx_path, heads, hidden) if fuse else {}
        max_diff, dim = _parity(onnx_path, batches, reference, name)
        _check_tolerance(name, "model.onnx", max_diff, tolerance, len(texts))
        packed_sha256, packed_diff = None, None
        if packed:
            packed_path = staging / PACKED_ONNX
            texts_ids = unpadded_rows(batches)
            module: nn.Module = PackedPooledEncoder(model, normalize, position_offset(model.config))
            _export_graph(module.eval(), example_feed(texts_ids, pad_id), packed_path, packed_dynamic_shapes())
            if fuse:
                fuse_gelu(packed_path, heads, hidden)
            packed_diff = packed_parity(packed_path, texts_ids, np.concatenate(reference), pad_id)
            _check_tolerance(name, PACKED_ONNX, packed_diff, tolerance, len(texts))
            packed_sha256 = sha256_file(packed_path)
        spec = MemberSpec(
            name=name,
            base_model=base_model,
            dim=dim,
            onnx_sha256=sha256_file(onnx_path),
            tokenizer_sha256=sha256_file(tokenizer_path),
            tasks=list(tasks or []),
            layer=resolved,
            pooling="mean",
            normalize=normalize,
            max_length=max_length,
            text_prefix=text_prefix,
            parity_max_abs_diff=max_diff,
            training=dict(training or {}),
            graph_fusions=fusions,
            packed_onnx_sha256=packed_sha256,
            packed_parity_max_abs_diff=packed_diff,
        )
        write_json_atomic(staging / "member.json", spec.to_json())
    return spec


def _check_tolerance(name: str, graph: str, max_diff: float, tolerance: float, n_texts: int) -> None:
    if max_diff > tolerance:
        raise ExportParityError(
            f"member {name!r}: {graph} differs from PyTorch by {max_diff:.3g} (max abs) on "
            f"{n_texts} parity texts, above tolerance {tolerance:.3g}"
        )


@contextmanager
def staged_member(members_dir: Path, name: str) -> Iterator[Path]:
    """A staging folder that replaces `members/<name>` only when the block completes, so a failed
    parity check or a crash leaves the previous member (or none), never a half-written one."""
    staging = members_dir / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = members_dir / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)


def _write_tokenizer_json(checkpoint: Path, target: Path) -> Path:
    """Copy the checkpoint's tokenizer.json byte for byte, so members sharing a tokenizer share its sha256.

    A checkpoint with only a slow (sentencepiece) tokenizer gets one converted by transformers.
    """
    source = checkpoint / "tokenizer.json"
    if source.is_file():
        shutil.copyfile(source, target)
        return target
    from transformers import AutoTokenizer

    try:
        backend = AutoTokenizer.from_pretrained(checkpoint).backend_tokenizer
    except (OSError, ValueError, AttributeError) as exc:
        raise ExportError(f"{checkpoint}: no tokenizer.json and no fast tokenizer could be built ({exc})") from None
    target.write_text(backend.to_str(), encoding="utf-8")
    return target


Batch = tuple[np.ndarray, np.ndarray]


def _tokenize_batches(tokenizer_path: Path, checkpoint: Path, texts: list[str], max_length: int) -> list[Batch]:
    """Padded batches made with tokenizer.json alone (what the service does), checked against AutoTokenizer.

    If the two disagree, the served member would see different ids than the model was trained with,
    which no graph-level parity check could reveal.
    """
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    encodings = tokenizer.encode_batch(texts)
    expected = AutoTokenizer.from_pretrained(checkpoint)(texts, truncation=True, max_length=max_length)["input_ids"]
    for text, got, want in zip(texts, encodings, expected, strict=True):
        if list(got.ids) != list(want):
            raise ExportParityError(
                f"{tokenizer_path}: tokenises {text!r} as {list(got.ids)[:12]}... but AutoTokenizer gives "
                f"{list(want)[:12]}...; the service would feed the model different ids"
            )
    pad_id = tokenizer.token_to_id("<pad>")
    pad_id = 0 if pad_id is None else pad_id
    size = 16
    # The service's own padding, so parity covers exactly the arrays the service will feed.
    starts = range(0, len(encodings), size)
    return [pad_batch([e.ids for e in encodings[start : start + size]], pad_id) for start in starts]


def _reference_embeddings(
    model: nn.Module, ids: np.ndarray, mask: np.ndarray, layer: int, normalize: bool
) -> np.ndarray:
    """Mean-pooled `hidden_states[layer]` of the full model: the ground truth the graph must reproduce."""
    mask_t = torch.from_numpy(mask)
    out = model(input_ids=torch.from_numpy(ids), attention_mask=mask_t, output_hidden_states=True)
    hidden = out.hidden_states[layer]
    weights = mask_t.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if normalize:
        pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
    return pooled.numpy()


def _pad_id(tokenizer_path: Path) -> int:
    """The pad id the service will use (`<pad>` of tokenizer.json, else 0), as `_tokenize_batches` pads."""
    from tokenizers import Tokenizer

    pad_id = Tokenizer.from_file(str(tokenizer_path)).token_to_id("<pad>")
    return 0 if pad_id is None else int(pad_id)


def _export_graph(
    module: nn.Module, feed: dict[str, torch.Tensor], path: Path, dynamic_shapes: dict[str, dict[int, Any]]
) -> None:
    """Export with the dynamo (torch.export) exporter.

    Why dynamo and not the legacy TorchScript tracer: on torch 2.13 the tracer bakes transformers'
    Python-side mask logic into constants (TracerWarning in masking_utils) and lowers indexing with a
    "wrong for negative indices" caveat, i.e. it can silently produce a graph valid only for the traced
    shapes. torch.export either captures shape logic symbolically or fails loudly, and its graph is
    smaller (about 90 vs 220 nodes for the tiny model).
    external_data=False keeps one self-contained model.onnx whose sha256 covers all weights (the base
    models we serve are well under protobuf's 2 GB limit).
    """
    with torch.no_grad(), warnings.catch_warnings():
        # both inputs share the axes, so the exporter reports (harmlessly) that it reuses one name per axis
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
        # torch 2.13's own pytree pickling trips its LeafSpec deprecation; nothing for us to change
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
        torch.onnx.export(
            module,
            tuple(feed.values()),
            str(path),
            input_names=list(feed),
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )


def _parity(onnx_path: Path, batches: list[Batch], reference: list[np.ndarray], name: str) -> tuple[float, int]:
    """Run the saved graph in onnxruntime exactly as the service will; return (max abs diff, output dim)."""
    import onnxruntime as ort
    from tqdm import tqdm

    # Plain graph, default optimisation level: the service picks its own level when it loads the member.
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    max_diff = 0.0
    dim = 0
    for (ids, mask), want in tqdm(list(zip(batches, reference, strict=True)), desc=f"parity {name}", leave=False):
        (got,) = session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})
        if got.shape != want.shape or got.dtype != np.float32:
            raise ExportParityError(f"{onnx_path}: output {got.shape} {got.dtype}, expected {want.shape} float32")
        max_diff = max(max_diff, float(np.abs(got - want).max()))
        dim = int(got.shape[1])
    return max_diff, dim
