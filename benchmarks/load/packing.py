"""A member's packed graph against its padded one through the service's own encoder, on the same random batches.

`python -m benchmarks.load.packing --repo artifacts/repo --batch 16 --rows 32,64` draws random batches of
Tatoeba sentences (what concurrent requests hand the batcher), runs each batch through the first member's
model.onnx (cost buckets; the service's `--pack-tokens 0`) and its model.packed.onnx at each row length, in a
shuffled order per batch so a
change of machine load hits all alike, and reports sentences/s and the ratio to padded. Pre-tokenized: this is
the encoder's share of the server's work only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.load.texts import load_sentences
from service.encoders.onnx import OnnxEncoder
from service.errors import StartupError
from service.repository import load_repository


def compare(repo: Path, texts: list[str], batch: int, rows: list[int], trials: int) -> dict[str, Any]:
    """Sentences/s of the padded graph and of the packed graph at each row length, on the same batches."""
    member = load_repository(repo).members[0]
    if member.packed_onnx_path is None:
        raise StartupError(f"{member.directory}: no packed graph (export the member with --packed)")
    encoders = {"padded": OnnxEncoder(member, pack_tokens=0)}
    for length in rows:
        encoders[f"packed{length}"] = OnnxEncoder(member, pack_tokens=length)
    for encoder in encoders.values():
        encoder.warmup()
    ids = encoders["padded"].tokenizer.encode(texts)
    rng = random.Random(0)
    seconds = dict.fromkeys(encoders, 0.0)
    for _ in range(trials):
        sample = rng.sample(ids, min(batch, len(ids)))
        order = list(encoders)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            encoders[name].forward(sample)
            seconds[name] += time.perf_counter() - start
    done = trials * min(batch, len(ids))
    rates = {name: round(done / s, 1) for name, s in seconds.items()}
    return {"batch": batch, "trials": trials, "sentences_per_s": rates,
            "vs_padded": {name: round(rate / rates["padded"], 3) for name, rate in rates.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load.packing", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("artifacts/repo"), help="first member exported with --packed")
    parser.add_argument("--batch", type=int, default=64, help="texts per random batch")
    parser.add_argument("--rows", default="32,64,128", help="comma-separated row lengths (pack_tokens) to try")
    parser.add_argument("--trials", type=int, default=30, help="random batches")
    parser.add_argument("--sentences", type=int, default=2000, help="Tatoeba sentences to draw from")
    args = parser.parse_args(argv)
    texts = [text for _, text in load_sentences(limit=args.sentences)]
    rows = [int(r) for r in args.rows.split(",") if r]
    try:
        print(json.dumps(compare(args.repo, texts, args.batch, rows, args.trials)))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
