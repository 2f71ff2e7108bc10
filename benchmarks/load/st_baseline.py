"""sentence-transformers (ONNX backend) encoding in process: the library baseline.

Run by the peers' own interpreter (`/work/peers-venv/bin/python benchmarks/load/st_baseline.py ...`),
never imported by xret: sentence-transformers pulls torch and its own transformers, which must not
enter xret's environment. Standalone on purpose (stdlib + sentence_transformers only). Prints one
JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="folder with config, tokenizer and model.onnx")
    parser.add_argument("--texts", type=Path, required=True, help="JSON list of texts (prefix already added)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    import onnxruntime
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    model = SentenceTransformer(
        str(args.model), backend="onnx", device="cpu", model_kwargs={"file_name": "model.onnx"}, local_files_only=True
    )
    model.encode(texts[: 4 * args.batch_size], batch_size=args.batch_size, normalize_embeddings=True)
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    json.dump(
        {
            "peer": "sentence-transformers",
            "version": sentence_transformers.__version__,
            "backend": "onnx",
            "onnxruntime": onnxruntime.__version__,
            "batch_size": args.batch_size,
            "sentences": len(texts),
            "dim": int(vectors.shape[1]),
            "seconds": round(seconds, 4),
            "sentences_per_s": round(len(texts) / seconds, 2),
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
