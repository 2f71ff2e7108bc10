"""Quantise an exported member (int8 for CPUs, fp16 for GPUs) and prove it still embeds like its fp32 graph.

Dynamic int8 quantisation stores MatMul weights as int8 and quantises activations per batch at run time.
On a CPU with VNNI it doubled the service's encoder ceiling at a cost of about one Tatoeba point (see
benchmarks/PERFORMANCE.md, section 6, Fix 3). fp16 halves the graph and lets a GPU's tensor cores run the
MatMuls; on a CPU it buys nothing. Either is offered as a *new* member beside the fp32 one: the repository
owner chooses which one `ensemble.json` serves, and the fp32 member stays for comparison.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx_export import (
    MEMBER_NAME,
    OUTPUT_NAME,
    ExportError,
    ExportParityError,
    multilingual_sentences,
    staged_member,
)
from service.encoders.base import Tokenizer
from service.encoders.onnx import pad_batch
from service.encoders.packing import DEFAULT_PACK_TOKENS, pack_rows, packed_feed, unpack
from service.errors import StartupError
from service.repository import (
    PACKED_ONNX,
    MemberSpec,
    RepositoryError,
    load_member,
    sha256_file,
    write_json_atomic,
)

QUANT_MODES = ("int8", "fp16")
MODE_LABELS = {"int8": "int8-dynamic", "fp16": "fp16"}  # what member.json records: the mode and how it was applied
# Real models: multilingual-e5-small's per-channel int8 graph gives min 0.988 on the parity sentences, the
# per-tensor one 0.980; 0.98 passes the former and stops a graph that drifts further than either.
DEFAULT_MIN_COSINE = 0.98
PER_CHANNEL = True
PARITY_BATCH = 16


class QuantizeError(ExportError):
    """The quantisation was asked for something impossible (unknown member, name taken, unloadable graph)."""


class QuantizeParityError(ExportParityError):
    """The int8 graph's embeddings drifted from the fp32 ones by more than the allowed cosine."""


def quantize_member(
    repo: Path,
    member: str,
    name: str | None = None,
    *,
    mode: str = "int8",
    min_cosine: float = DEFAULT_MIN_COSINE,
    force: bool = False,
    parity_texts: list[str] | None = None,
) -> MemberSpec:
    """Write `members/<name>` (default `<member>-int8`): `member`'s graph quantised, same tokenizer.

    Like `export_member`, the new member is built in a staging folder and moved into place only after the
    parity check passed, so a refused or failed quantisation leaves the repository as it was. The source
    member's hashes are checked first: quantising a graph that no longer matches its member.json would
    record a provenance (`source_sha256`) for weights nobody exported.
    """
    repo = Path(repo)
    target = name or f"{member}-{mode}"
    if mode not in QUANT_MODES:
        raise QuantizeError(f"quantisation mode {mode!r} not in {QUANT_MODES}")
    if not 0.0 < min_cosine <= 1.0:
        raise QuantizeError(f"min cosine must be in (0, 1], got {min_cosine}")
    for what, value in (("member", member), ("member name", target)):
        if not MEMBER_NAME.match(value):  # both become paths under members/: no "..", no slashes
            raise QuantizeError(f"{what} {value!r} must match {MEMBER_NAME.pattern}")
    if target == member:
        raise QuantizeError(f"the quantised member needs a new name, not the source's {member!r}")
    members_dir = repo / "members"
    source_dir = members_dir / member
    spec = _source_spec(members_dir, member)
    if spec.quantization:
        raise QuantizeError(
            f"member {member!r} is already quantised ({spec.quantization.get('mode')} of "
            f"{spec.quantization.get('source_member')!r}); quantise the fp32 member instead"
        )
    final = members_dir / target
    if final.exists() and not force:
        raise QuantizeError(f"{final}: member {target!r} already exists (pass --force to replace it)")

    with staged_member(members_dir, target) as staging:
        shutil.copyfile(source_dir / "tokenizer.json", staging / "tokenizer.json")
        texts = parity_texts or multilingual_sentences()
        graphs = ["model.onnx", *([PACKED_ONNX] if spec.packed_onnx_sha256 else [])]
        found: list[np.ndarray] = []
        for graph in graphs:  # a packed twin is quantised too, or the service would pack with fp32 weights
            CONVERTERS[mode](source_dir / graph, staging / graph)
            packed = graph == PACKED_ONNX
            cosines = _cosines(source_dir / graph, staging / graph, spec, source_dir / "tokenizer.json", texts, packed)
            low, mean = float(cosines.min()), float(cosines.mean())
            if low < min_cosine:
                worst = texts[int(cosines.argmin())]
                raise QuantizeParityError(
                    f"member {target!r}: {mode} {graph}'s min cosine to fp32 is {low:.4f} (mean {mean:.4f}) on "
                    f"{len(texts)} parity texts, below --min-cosine {min_cosine} (worst: {worst[:40]!r})"
                )
            found.append(cosines)
        low, mean = float(min(c.min() for c in found)), float(found[0].mean())
        quantized = dataclasses.replace(
            spec,
            name=target,
            onnx_sha256=sha256_file(staging / "model.onnx"),
            # measured on the fp32 graph; carrying them over would credit the quantised graph with them
            # (parity_max_abs_diff stays: it is the fp32 graph's ONNX-vs-PyTorch check this one descends from)
            scores={},
            packed_onnx_sha256=sha256_file(staging / PACKED_ONNX) if spec.packed_onnx_sha256 else None,
            quantization=_record(mode, member, spec.onnx_sha256, low, mean, len(texts)),
        )
        write_json_atomic(staging / "member.json", quantized.to_json())
    return quantized


def _source_spec(members_dir: Path, member: str) -> MemberSpec:
    """The source member's validated spec, with its graph and tokenizer matching their recorded sha256."""
    try:
        return load_member(members_dir.parent, member).spec
    except RepositoryError as exc:
        raise QuantizeError(str(exc)) from None


def _int8_graph(source: Path, target: Path) -> None:
    """int8 weights, dynamic int8 activations, per output channel.

    Why per channel: a transformer's weight columns differ widely in range, and one scale per tensor spends
    most of the 256 levels on a few outlier columns. Measured on the parity sentences (same ops, same
    speed, 119 MB either way), multilingual-e5-small gave min / mean cosine to fp32 of 0.9878 / 0.9960 per
    channel against 0.9796 / 0.9916 per tensor; the tiny random test model gets 0.99998 either way, so it
    cannot tell them apart. `reduce_range` (7-bit weights) is left off: it only helps CPUs without VNNI.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_preprocess_hint():
            quantize_dynamic(source, target, per_channel=PER_CHANNEL, weight_type=QuantType.QInt8)
    except Exception as exc:  # protobuf, onnx checker and onnxruntime errors share no useful base class
        raise QuantizeError(f"{source}: not a loadable ONNX graph ({_one_line(exc)})") from None


def _fp16_graph(source: Path, target: Path) -> None:
    """Every float initializer and op in fp16, except the graph's inputs and output (`keep_io_types`).

    Keeping the output float32 keeps the repository contract (`sentence_embedding` is tensor(float)), so
    the service, the fusion and the index see the same member interface whatever the precision inside.
    LayerNormalization and Softmax run in fp16 too: onnxruntime's CUDA kernels for both accumulate in fp32,
    and the parity check below is what says whether that was good enough for this graph.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = onnx.load(str(source))
        onnx.save(convert_float_to_float16(model, keep_io_types=True), str(target))
    except Exception as exc:  # protobuf, onnx checker and converter errors share no useful base class
        raise QuantizeError(f"{source}: not a loadable ONNX graph ({_one_line(exc)})") from None


CONVERTERS = {"int8": _int8_graph, "fp16": _fp16_graph}


def _cosines(
    fp32: Path, quantized: Path, spec: MemberSpec, tokenizer_path: Path, texts: list[str], packed: bool
) -> np.ndarray:
    """Per-text cosine of the quantised and fp32 embeddings, fed exactly as the service feeds the member.

    Both run on onnxruntime's CPU provider, which has fp16 kernels too, so the check (and its tests) runs
    on any machine; `python -m benchmarks.load.devices` measures the same drift on a GPU.

    Cosine rather than max abs difference: retrieval ranks by cosine, and it stays meaningful for members
    exported without normalisation.
    """
    import onnxruntime as ort

    try:
        tokenizer = Tokenizer(tokenizer_path, spec.text_prefix, spec.max_length, spec.tokenizer_sha256)
    except StartupError as exc:
        raise QuantizeError(str(exc)) from None
    ids = tokenizer.encode(texts)
    feeds = _parity_feeds(ids, packed, tokenizer.pad_id)
    outputs: list[np.ndarray] = []
    for path in (fp32, quantized):
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            raise QuantizeError(f"{path}: onnxruntime cannot load the model ({_one_line(exc)})") from None
        out = np.full((len(texts), spec.dim), np.nan)
        for texts_of, feed in feeds:
            got = np.asarray(session.run([OUTPUT_NAME], feed)[0], dtype=np.float64)
            try:
                if packed:  # [rows, slots, dim]: one vector per text of a row
                    unpack(got, texts_of, out)
                else:
                    out[texts_of[0]] = got
            except (ValueError, IndexError):  # numpy's shape mismatch: the graph's output is not [.., dim]
                raise QuantizeParityError(
                    f"{path}: output {got.shape} does not hold one {spec.dim}-vector per text"
                ) from None
        if not np.isfinite(out).all():
            raise QuantizeParityError(
                f"{path}: {int((~np.isfinite(out)).any(axis=1).sum())} texts got no finite vector"
            )
        outputs.append(out)
    ref, got = outputs
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    return np.asarray((ref * got).sum(axis=1) / np.maximum(norms, 1e-12))


def _parity_feeds(
    ids: list[list[int]], packed: bool, pad_id: int
) -> list[tuple[list[list[int]], dict[str, np.ndarray]]]:
    """Batches of PARITY_BATCH texts fed as the service feeds the member: padded, or packed (several a row).

    Each feed comes with the text indices its output rows hold (one list for a padded batch; one list per row
    for a packed one), so every graph's vectors land at their texts' places whatever the contract.
    """
    feeds: list[tuple[list[list[int]], dict[str, np.ndarray]]] = []
    for start in range(0, len(ids), PARITY_BATCH):
        chunk = list(range(start, min(start + PARITY_BATCH, len(ids))))
        if packed:
            rows = [[chunk[i] for i in row] for row in pack_rows([len(ids[i]) for i in chunk], DEFAULT_PACK_TOKENS)]
            feeds.append((rows, packed_feed(ids, rows, pad_id)))
        else:
            input_ids, mask = pad_batch([ids[i] for i in chunk], pad_id)
            feeds.append(([chunk], {"input_ids": input_ids, "attention_mask": mask}))
    return feeds


def _record(mode: str, member: str, source_sha256: str, low: float, mean: float, n_texts: int) -> dict[str, Any]:
    """member.json's `quantization`: enough to tell what was quantised, how, and how far it drifted."""
    return {
        "mode": MODE_LABELS[mode],
        "source_member": member,
        "source_sha256": source_sha256,
        "per_channel": PER_CHANNEL if mode == "int8" else None,
        "min_cosine": round(low, 6),
        "mean_cosine": round(mean, 6),
        "parity_texts": n_texts,
    }


@contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """Drop onnxruntime's "consider pre-processing" root-logger warning: it concerns conv nets, not encoders."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
