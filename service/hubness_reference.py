"""Loading and embedding the hubness reference the index measures r_y against (`--hubness-reference`).

Why a module of its own: the reference is read once at start-up, validated like any user input (a bad
file is a StartupError naming the file and line, not a traceback), and embedded by the served ensemble
itself, so its vectors live in the same space as the stored ones. See service/hubness.py for what r_y
over a reference is and export/reference.py for the default sample.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from service.ensemble import Ensemble
from service.errors import StartupError

log = logging.getLogger("xret.hubness")

MAX_REFERENCE_SENTENCES = 200_000  # ~10 minutes of CPU embedding per member, and 0.3 GB of fp32 at dim 384
EMBED_BATCH = 64


def read_reference(path: Path, max_chars: int) -> tuple[list[str], str]:
    """(sentences, id) of a reference file: UTF-8, one sentence per line, blank lines skipped.

    The id is the file's sha256 prefix: stored neighbourhood means name it, so a changed file is recomputed.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"hubness reference {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StartupError(f"hubness reference {path}: not UTF-8 (byte {exc.start})") from None
    sentences = []
    for number, line in enumerate(text.split("\n"), start=1):
        sentence = line.rstrip("\r").strip()
        if not sentence:
            continue
        if len(sentence) > max_chars:
            raise StartupError(
                f"hubness reference {path}: line {number} has {len(sentence)} characters, over the "
                f"{max_chars} a text may have (max_chars_per_text)"
            )
        sentences.append(sentence)
    if not sentences:
        raise StartupError(f"hubness reference {path}: no sentences (expected one per line)")
    if len(sentences) > MAX_REFERENCE_SENTENCES:
        raise StartupError(
            f"hubness reference {path}: {len(sentences)} sentences, over the {MAX_REFERENCE_SENTENCES} it may hold"
        )
    return sentences, hashlib.sha256(raw).hexdigest()[:16]


def embed_reference(ensemble: Ensemble, sentences: list[str], batch: int = EMBED_BATCH) -> np.ndarray:
    """Fused unit vectors of the reference, in batches of similar length (order is irrelevant to r_y)."""
    started = time.perf_counter()
    items = sorted(ensemble.tokenize(sentences), key=Ensemble.cost)
    vectors = [np.stack(ensemble.run(items[i : i + batch])) for i in range(0, len(items), batch)]
    out = np.ascontiguousarray(np.vstack(vectors), dtype=np.float32)
    log.info("embedded the hubness reference: %d sentences in %.1f s", len(out), time.perf_counter() - started)
    return out
