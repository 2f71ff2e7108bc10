"""The ceiling: bare onnxruntime over the served graph with ideal batches, and the CPU's GEMM rate.

No server, no queue, no fusion: texts tokenized up front, sorted by token count (not characters:
scripts differ by 3x in characters per token), cut into batches of `batch_size`, each padded to its
own longest text only. What xret reaches over HTTP divided by this number is the share of the
machine's inference speed the serving stack keeps. The FLOP count comes from the graph itself
(every weight MatMul/Gemm, plus the attention products per Softmax) and the GEMM rate from numpy,
so the ceiling can also be read as a fraction of what the CPU's matrix units can do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tokenizers

from service.encoders.onnx import make_session, pad_batch

GEMM_SHAPES = ((2048, 2048, 2048), (384, 384, 1536), (384, 1536, 384))


def gemm_rate(seconds_per_shape: float = 1.0) -> dict[str, Any]:
    """float32 matmul GFLOP/s of this CPU through numpy (all its BLAS threads), per shape and best."""
    rng = np.random.default_rng(0)
    rates = {}
    for m, k, n in GEMM_SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        a @ b  # first call pays for thread start-up
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds_per_shape:
            a @ b
            runs += 1
        rates[f"{m}x{k}x{n}"] = round(2 * m * k * n * runs / (time.perf_counter() - start) / 1e9, 2)
    return {"gflops_by_shape": rates, "gflops_best": max(rates.values()), "numpy": np.__version__}


def graph_flops(model_path: Path) -> tuple[int, int, int]:
    """(weight FLOPs per token, attention layers, hidden size) read from the ONNX graph.

    Weight FLOPs are 2*K*N per token for every MatMul/Gemm whose second input is an initializer;
    attention adds 4*L*hidden per token per layer (QK^T and AV) for a padded length L, counted by
    the caller because it depends on L.
    """
    model = onnx.load(str(model_path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    weight_flops = 0
    hidden = 0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in shapes:
            dims = shapes[node.input[1]]
            if len(dims) == 2:
                weight_flops += 2 * dims[0] * dims[1]
                hidden = max(hidden, min(dims))
    layers = sum(1 for node in model.graph.node if node.op_type == "Softmax")
    return weight_flops, layers, hidden


def _session(model_path: Path, threads: int) -> ort.InferenceSession:
    """The service's own session options (`make_session`), so the ceiling is for the same runtime setup;
    idle threads may spin (onnxruntime's default), as a bare loop with the machine to itself would let them."""
    return make_session(model_path, ["CPUExecutionProvider"], threads, spinning=True)


def _pad(rows: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    """The service's own padding, so the ceiling feeds exactly what xret would."""
    ids, mask = pad_batch(rows, pad_id)
    return {"input_ids": ids, "attention_mask": mask}


def ort_ceiling(
    member_dir: Path,
    texts: list[str],
    *,
    prefix: str,
    max_length: int = 512,
    batch_size: int = 32,
    sort: bool = True,
    threads: int = 0,
    output: str = "sentence_embedding",
    gemm_gflops: float | None = None,
) -> dict[str, Any]:
    """Sentences/s of a bare loop over `member_dir`/model.onnx (one warm-up pass over 4 batches)."""
    model_path = member_dir / "model.onnx"
    tokenizer = tokenizers.Tokenizer.from_file(str(member_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    pad_id = tokenizer.token_to_id("<pad>")
    if pad_id is None:
        raise ValueError(f"{member_dir}/tokenizer.json has no <pad> token")
    rows = [e.ids for e in tokenizer.encode_batch_fast([prefix + t for t in texts])]
    if sort:
        rows.sort(key=len)
    session = _session(model_path, threads)
    batches = [_pad(rows[i : i + batch_size], pad_id) for i in range(0, len(rows), batch_size)]
    for feed in batches[:4]:
        session.run([output], feed)
    start = time.perf_counter()
    for feed in batches:
        session.run([output], feed)
    seconds = time.perf_counter() - start
    weight_flops, layers, hidden = graph_flops(model_path)
    padded = sum(int(b["input_ids"].size) for b in batches)
    flops = sum(
        int(b["input_ids"].size) * (weight_flops + 4 * b["input_ids"].shape[1] * hidden * layers) for b in batches
    )
    result: dict[str, Any] = {
        "model": str(model_path),
        "sentences": len(rows),
        "batch_size": batch_size,
        "sorted_by_tokens": sort,
        "threads": threads,
        "seconds": round(seconds, 4),
        "sentences_per_s": round(len(rows) / seconds, 2),
        "tokens_per_sentence": round(sum(len(r) for r in rows) / len(rows), 2),
        "padding_share": round(1 - sum(len(r) for r in rows) / padded, 4),
        "gflops": round(flops / seconds / 1e9, 2),
        "graph": {"weight_flops_per_token": weight_flops, "layers": layers, "hidden": hidden},
        "onnxruntime": ort.__version__,
    }
    if gemm_gflops:
        result["fraction_of_gemm_rate"] = round(flops / seconds / 1e9 / gemm_gflops, 4)
    return result
