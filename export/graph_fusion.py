"""Operator fusion applied to an exported member graph before its parity check.

The dynamo exporter writes GELU as five elementwise nodes (Div, Erf, Add, Mul, Mul) after the FFN's
bias Add, and onnxruntime's own session-time fusions do not recognise that form, so each of the 12
layers made six passes over its [tokens, 1536] intermediate. onnxruntime's transformer optimizer (run
here once, offline, in its Python-only mode) rewrites them into one BiasGelu contrib node per layer,
which onnxruntime runs on CPU and CUDA. Measured on the bare loop (mE5-small, 2 cores): part of the
graph-level gain in PERFORMANCE.md. Only the GELU fusions are enabled: the fused Attention did not
match this export, and the fused SkipLayerNormalization ran slower here (the service also turns
onnxruntime's own SkipLayerNorm fusion off). The parity check that follows runs the fused graph.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

FUSED_OPS = ("Gelu", "BiasGelu", "FastGelu")


def fuse_gelu(model_path: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Rewrite `model_path` in place with GELU (and bias + GELU) fused; return the fused node counts."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for switch in (
        "enable_attention",
        "enable_skip_layer_norm",
        "enable_bias_skip_layer_norm",
        "enable_embed_layer_norm",
        "enable_layer_norm",
        "enable_gelu_approximation",
    ):
        setattr(options, switch, False)
    # the optimizer reports its (harmless) symbolic shape inference failure on dynamo graphs by a warning
    # log and a bare print: neither is news to the person exporting
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = optimize_model(
                str(model_path),
                model_type="bert",
                num_heads=num_heads,
                hidden_size=hidden_size,
                optimization_options=options,
                opt_level=0,  # Python fusions only: the saved graph stays portable across CPUs and providers
            )
    finally:
        quiet.setLevel(level)
    counts = model.get_fused_operator_statistics()
    model.save_model_to_file(str(model_path), use_external_data_format=False)
    return {op: int(counts.get(op, 0)) for op in FUSED_OPS if counts.get(op, 0)}
