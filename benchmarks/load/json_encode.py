"""What writing an embeddings answer costs: FastAPI's default response path against the service's orjson path.

FastAPI turns a returned model into Python objects, validates it against the response model again and
runs the standard library's json over every float. `service.rest.routes` writes the same schema with
orjson straight from the float32 array. Both are timed here side by side, in one process, on the
same vectors, for one-text and 32-text answers (the issue's two request shapes), and their bodies are
checked to decode to the same float32 values.

    python -m benchmarks.load.json_encode [--dim 384] [--out results/load/json_encode.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.responses import JSONResponse
from fastapi.routing import serialize_response
from fastapi.utils import create_model_field

from service.rest.routes import openai_embeddings_response
from service.rest.schemas import OpenAIEmbedding, OpenAIEmbeddingResponse, OpenAIUsage

Encoder = Callable[[np.ndarray], bytes]


def fastapi_default() -> Encoder:
    """The path a route returning an OpenAIEmbeddingResponse model takes through FastAPI."""
    field = create_model_field(name="response", type_=OpenAIEmbeddingResponse, mode="serialization")
    loop = asyncio.new_event_loop()

    def encode(vectors: np.ndarray) -> bytes:
        data = [OpenAIEmbedding(index=i, embedding=v.tolist()) for i, v in enumerate(vectors)]
        model = OpenAIEmbeddingResponse(data=data, model="m", usage=OpenAIUsage(prompt_tokens=1, total_tokens=1))
        content = loop.run_until_complete(serialize_response(field=field, response_content=model, is_coroutine=True))
        return bytes(JSONResponse(content).body)

    return encode


def service_path(vectors: np.ndarray) -> bytes:
    """The route's own body (service.rest.routes.openai_embeddings_response)."""
    return bytes(openai_embeddings_response(vectors, "m", 1).body)


def decoded(body: bytes) -> np.ndarray:
    return np.asarray([d["embedding"] for d in json.loads(body)["data"]], dtype=np.float32)


def time_per_call(encode: Encoder, vectors: np.ndarray, seconds: float = 1.0) -> float:
    """Mean seconds per call over at least `seconds` of calls, after one warm-up call."""
    encode(vectors)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        encode(vectors)
        calls += 1
    return elapsed / calls


def compare(dim: int = 384, rows: tuple[int, ...] = (1, 32), seconds: float = 1.0) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    default = fastapi_default()
    out = []
    for n in rows:
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        slow, fast = default(vectors), service_path(vectors)
        if not (np.array_equal(decoded(slow), vectors) and np.array_equal(decoded(fast), vectors)):
            raise AssertionError("an encoder changed the float32 values")
        t_default, t_service = time_per_call(default, vectors, seconds), time_per_call(service_path, vectors, seconds)
        out.append(
            {
                "texts": n,
                "fastapi_default_ms": round(t_default * 1000, 4),
                "service_ms": round(t_service * 1000, 4),
                "speedup": round(t_default / t_service, 1),
                "fastapi_default_bytes": len(slow),
                "service_bytes": len(fast),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per encoder and shape")
    parser.add_argument("--out", type=Path, default=Path("results/load/json_encode.json"))
    args = parser.parse_args(argv)
    rows = compare(args.dim, seconds=args.seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dim": args.dim, "rows": rows}, indent=1), encoding="utf-8")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
