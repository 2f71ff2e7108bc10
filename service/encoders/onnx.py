"""ONNX Runtime backend: one InferenceSession per member (the only place onnxruntime is imported).

The session is created once and shared by every worker thread: `InferenceSession.run` is
thread-safe and releases the GIL, so members (and batches, with batcher concurrency > 1) run in
parallel without a session per thread. The graph's inputs and outputs are checked against the
repository contract at load, so a wrong export fails at start-up with the file named, not at the
first request.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from service.encoders.base import Tokenizer
from service.encoders.call_cost import DEFAULT_CALL_COST, CallCost, calibrate, cost_buckets
from service.encoders.packing import DEFAULT_PACK_TOKENS, PACKED_INPUTS, pack_rows, packed_feed, unpack
from service.encoders.token_counts import TokenCounts
from service.errors import StartupError
from service.repository import Member

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"
SPIN_INTRA = "session.intra_op.allow_spinning"
SPIN_INTER = "session.inter_op.allow_spinning"
WARMUP_TEXTS = ["warm-up", "a somewhat longer warm-up sentence, so that padding is exercised too"]

Device = Literal["auto", "cpu", "cuda"]
Bucketing = Literal["cost", "slack", "none"]
# onnxruntime's fused SkipLayerNormalization kernel ran slower on this CPU than the LayerNormalization plus
# Add it replaces (bare loop, mE5-small, 2 cores: 275 -> 303-314 sentences/s without it; PERFORMANCE.md).
DEFAULT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def choose_providers(device: Device, where: Path) -> list[str]:
    """Execution providers for `device`; an explicit cuda that cannot be had is a start-up error."""
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise StartupError(
            f"{where}: device 'cuda' requested but onnxruntime offers only {available} "
            "(install onnxruntime-gpu with a matching CUDA, or use device 'auto' or 'cpu')"
        )
    if device == "cpu" or CUDA not in available:
        return [CPU]
    preload_cuda_libraries()
    return [CUDA, CPU]


_preloaded = False


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from pip's nvidia-* packages before the first CUDA session, once per process.

    onnxruntime-gpu links them by soname only, so with the libraries installed as Python packages (the
    `onnxruntime-gpu[cuda,cudnn]` way, or beside a CUDA torch) the CUDA provider fails to load and the
    session quietly falls back to the CPU unless they are already loaded or on LD_LIBRARY_PATH.
    `preload_dlls` (onnxruntime >= 1.21) finds them; it is a no-op where they are missing, and older
    versions without it rely on the system's library path as before.
    """
    global _preloaded
    preload = getattr(ort, "preload_dlls", None)
    if not _preloaded and preload is not None:
        try:
            preload()
        except Exception as exc:  # a broken library must not stop start-up: the session check reports the provider
            logger.warning("onnxruntime.preload_dlls failed (%s); relying on the system's library path", exc)
    _preloaded = True


def check_contract(session: ort.InferenceSession, dim: int, where: Path, packed: bool = False) -> None:
    """model.onnx: input_ids, attention_mask (int64, rank 2) -> sentence_embedding float [batch, dim];
    model.packed.onnx: input_ids, position_ids, segment_ids (int64, rank 2), pool (float, rank 3) -> [rows,
    slots, dim]."""
    expected = PACKED_INPUTS if packed else INPUTS
    inputs = {i.name: i for i in session.get_inputs()}
    if set(inputs) != set(expected):
        kind = "a packed graph" if packed else "the padded graph"
        raise StartupError(f"{where}: model inputs are {sorted(inputs)}, but {kind} needs {list(expected)}")
    for name in expected:
        arg = inputs[name]
        want = ("tensor(float)", 3) if name == "pool" else ("tensor(int64)", 2)
        if (arg.type, len(arg.shape)) != want:
            raise StartupError(f"{where}: input {name} is {arg.type} {arg.shape}, expected {want[0]} of rank {want[1]}")
    outputs = {o.name: o for o in session.get_outputs()}
    if OUTPUT not in outputs:
        raise StartupError(f"{where}: model outputs are {sorted(outputs)}, the repository contract needs '{OUTPUT}'")
    out = outputs[OUTPUT]
    rank = 3 if packed else 2
    if out.type != "tensor(float)" or len(out.shape) != rank:
        raise StartupError(f"{where}: output {OUTPUT} is {out.type} {out.shape}, expected tensor(float) of rank {rank}")
    if isinstance(out.shape[-1], int) and out.shape[-1] != dim:
        raise StartupError(f"{where}: output {OUTPUT} has dim {out.shape[-1]} but member.json says {dim}")


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask [n, longest] int64, padded on the right to the longest row only."""
    longest = max(len(row) for row in ids)
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


MIN_BUCKET_ROWS = 8  # below this, another session call costs more than the padding it saves


def length_buckets(lengths: list[int], slack: float, min_rows: int = MIN_BUCKET_ROWS) -> list[list[int]]:
    """Row indices cut into groups whose padded tokens stay within (1 + slack) x their real tokens.

    A batch is padded to its longest row, so one long text among short ones multiplies the work of
    all of them: a request of 32 mixed-length sentences pads ~60% of its tokens, and the micro-batcher
    cannot help because the whole request fits its token budget. Rows are sorted by length and cut
    greedily: a row joins the current group unless the group, padded to this (longest) row, would
    exceed (1 + slack) x its real tokens; groups under `min_rows` always take the next row.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        if len(current) >= min_rows and (len(current) + 1) * n > (1.0 + slack) * (real + n):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    if current:
        groups.append(current)
    return groups


def make_session(
    path: Path,
    providers: list[str],
    intra_op_threads: int,
    spinning: bool,
    disabled_optimizers: tuple[str, ...] = DEFAULT_DISABLED_OPTIMIZERS,
) -> ort.InferenceSession:
    """The service's session for a member graph (also what the load benchmark's ceiling runs, so the
    ceiling is measured with the very options the service uses); onnxruntime's errors pass through."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1  # members already run in parallel threads; nested pools oversubscribe
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for entry in (SPIN_INTRA, SPIN_INTER):  # onnxruntime spins unless told not to
        options.add_session_config_entry(entry, "1" if spinning else "0")
    options.log_severity_level = 3  # errors only: optimiser notices are not operator news
    return ort.InferenceSession(
        str(path), sess_options=options, providers=providers, disabled_optimizers=list(disabled_optimizers)
    )


class OnnxEncoder:
    """A repository member served by ONNX Runtime; `tokenizer` is passed in to be shared by members."""

    def __init__(
        self,
        member: Member,
        device: Device = "auto",
        intra_op_threads: int = 0,
        tokenizer: Tokenizer | None = None,
        spinning: bool = False,
        padding_slack: float = 0.25,
        bucketing: Bucketing = "cost",
        disabled_optimizers: tuple[str, ...] = DEFAULT_DISABLED_OPTIMIZERS,
        pack_tokens: int = DEFAULT_PACK_TOKENS,
    ) -> None:
        """`spinning` lets idle pool threads spin-wait for work: lower latency per call, but on a small
        machine they burn the cores the event loop and the other members need (see Settings.ort_spinning).
        `bucketing` says how a batch is cut into session calls: by predicted run time (`cost`, calibrated
        at warm-up), by a padding bound (`slack`, see `length_buckets`) or not at all (`none`).
        A member exported with a packed graph (model.packed.onnx) runs that graph when `pack_tokens` > 0: rows
        of up to `pack_tokens` tokens hold several texts each (service/encoders/packing.py) and are then cut
        into calls the same way. Without one, or with `pack_tokens` 0, it runs model.onnx."""
        if pack_tokens < 0:
            raise StartupError(f"pack_tokens must be >= 0 (0: do not pack), got {pack_tokens}")
        spec = member.spec
        self.name = spec.name
        self.dim = spec.dim
        packed_path = member.packed_onnx_path
        self.packed = packed_path is not None and pack_tokens > 0
        self.path = packed_path if packed_path is not None and self.packed else member.onnx_path
        self.tokenizer = tokenizer or Tokenizer(
            member.tokenizer_path, spec.text_prefix, spec.max_length, spec.tokenizer_sha256
        )
        self._device = device
        self._intra_op_threads = intra_op_threads
        self._padding_slack = padding_slack
        self._bucketing: Bucketing = bucketing
        self._disabled_optimizers = tuple(disabled_optimizers)
        self.pack_tokens = pack_tokens
        self.call_cost: CallCost = DEFAULT_CALL_COST
        self.tokens = TokenCounts()
        providers = choose_providers(device, self.path)
        try:
            self._session = make_session(self.path, providers, intra_op_threads, spinning, self._disabled_optimizers)
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            raise StartupError(f"{self.path}: onnxruntime cannot load the model ({exc})") from None
        if device == "cuda" and CUDA not in self._session.get_providers():
            raise StartupError(
                f"{self.path}: device 'cuda' requested but onnxruntime fell back to "
                f"{self._session.get_providers()} (CUDA/cuDNN libraries missing?)"
            )
        check_contract(self._session, self.dim, self.path, self.packed)

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """Embeddings of a batch, run as groups of similar length (see `bucketing`) and put back in order."""
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.tokens.add(real=sum(len(row) for row in ids))
        if self.packed:
            return self._forward_packed(ids)
        groups = self.buckets([len(row) for row in ids])
        if len(groups) == 1:
            return self._run(ids)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for rows in groups:
            out[rows] = self._run([ids[i] for i in rows])
        return out

    def buckets(self, lengths: list[int]) -> list[list[int]]:
        """How a batch of rows with these token counts is cut into session calls."""
        if self._bucketing == "cost":
            return cost_buckets(lengths, self.call_cost)
        if self._bucketing == "slack":
            return length_buckets(lengths, self._padding_slack)
        return [list(range(len(lengths)))] if lengths else []

    def _forward_packed(self, ids: list[list[int]]) -> np.ndarray:
        """Texts packed into rows, rows cut into calls like texts are (a row's cost is its token count)."""
        rows = pack_rows([len(row) for row in ids], self.pack_tokens)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for group in self.buckets([sum(len(ids[i]) for i in row) for row in rows]):
            self._run_packed(ids, [rows[g] for g in group], out)
        return out

    def _run_packed(self, ids: list[list[int]], rows: list[list[int]], into: np.ndarray) -> np.ndarray:
        """One call over `rows` (indices into `ids`); their vectors land in `into` at those indices."""
        feed = packed_feed(ids, rows, self.tokenizer.pad_id)
        self.tokens.add(computed=feed["input_ids"].size)
        (out,) = self._session.run([OUTPUT], feed)
        return unpack(np.asarray(out, dtype=np.float32), rows, into)

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        if self.packed:  # one text per row: what calibration times for a call of this shape
            return self._run_packed(ids, [[i] for i in range(len(ids))], np.empty((len(ids), self.dim), np.float32))
        input_ids, mask = pad_batch(ids, self.tokenizer.pad_id)
        self.tokens.add(computed=input_ids.size)
        (out,) = self._session.run([OUTPUT], {"input_ids": input_ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)

    def warmup(self) -> None:
        """One real batch; also proves a symbolic output dim really is member.json's dim."""
        out = self.forward(self.tokenizer.encode(WARMUP_TEXTS))
        if out.shape != (len(WARMUP_TEXTS), self.dim):
            raise StartupError(
                f"{self.path}: warm-up output shape {out.shape}, expected ({len(WARMUP_TEXTS)}, {self.dim})"
            )
        if not np.isfinite(out).all():
            raise StartupError(f"{self.path}: warm-up output has NaN or inf values")
        if self._bucketing == "cost":
            seed = [t for row in self.tokenizer.encode(WARMUP_TEXTS) for t in row]

            def timed_call(rows: int, length: int) -> None:
                """One call of `rows` real-token rows of `length` tokens (the calibration's probe)."""
                length = min(length, self.tokenizer.max_length)
                self._run([(seed * (length // len(seed) + 1))[:length]] * rows)

            self.call_cost = calibrate(timed_call)
        self.tokens.reset()

    @property
    def spinning(self) -> bool:
        """Whether the live session's threads spin, read back from it (not from what was asked)."""
        config = self._session.get_session_options()
        return all(config.get_session_config_entry(entry) == "1" for entry in (SPIN_INTRA, SPIN_INTER))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "onnxruntime",
            "onnxruntime_version": ort.__version__,
            "device": self._device,
            "provider": self._session.get_providers()[0],
            "providers": self._session.get_providers(),
            "intra_op_threads": self._intra_op_threads,
            "inter_op_threads": 1,
            "ort_spinning": self.spinning,
            "bucketing": self._bucketing,
            "packed": self.packed,
            "pack_tokens": self.pack_tokens if self.packed else None,
            "padding_slack": self._padding_slack,
            "call_cost_s": self.call_cost.as_dict(),
            "disabled_optimizers": list(self._disabled_optimizers),
            "model": str(self.path),
            "max_length": self.tokenizer.max_length,
            "tokenizer_key": self.tokenizer.key,
        }
