"""HTTP routes: parse the body, call one engine method, shape the answer. No logic of their own.

Texts are validated with the request's own field name ("query", "queries", "input") before the
engine runs, so an error names the field the client actually sent.
"""

from __future__ import annotations

import base64
import time
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.engine import Engine
from service.errors import InvalidInput, NotFound
from service.fusion import FusionOverride
from service.index import Sentence
from service.rest.schemas import (
    AddSentencesRequest,
    AddSentencesResponse,
    DeleteResponse,
    DeleteSentencesRequest,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    FusionUsed,
    HealthResponse,
    Hit,
    InfoResponse,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIErrorResponse,
    OpenAIModel,
    OpenAIModelList,
    QueryResult,
    ReadyResponse,
    SearchRequest,
    SearchResponse,
    SentenceOut,
    StatsResponse,
)

_ERROR_DESCRIPTIONS = {
    401: "An API key is configured and none was sent.",
    403: "The API key is wrong.",
    404: "Unknown sentence id (or, for /v1, unknown model).",
    413: "Too many texts, too long a text, or too large a body; the message names the limit.",
    422: "Invalid input; the message names the field.",
    429: "The encoder queue is full; retry after the Retry-After header's seconds.",
    503: "The engine is starting or stopping.",
}

# Module-level so FastAPI can resolve them from the (postponed) annotations; they only read headers.
BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
KEY_HEADER = APIKeyHeader(name="x-api-key", auto_error=False, description="`x-api-key: <key>`")


def _float32_rows(vectors: np.ndarray) -> np.ndarray:
    """Little-endian float32, C-contiguous: what base64 encodes and what orjson writes without a copy per row."""
    return np.ascontiguousarray(vectors, dtype="<f4")


def _vector_json(answer: dict[str, Any]) -> Response:
    """The embedding answers, written by orjson straight from the float32 arrays.

    FastAPI's default path turns each vector into a Python list, validates the response model again and
    runs the standard library's json over every float: 0.5 ms for one 384-d vector and 14 ms for 32 of
    them, against 0.02 and 0.5 ms here (measured side by side, PERFORMANCE.md stop 10), on the cores the
    encoder needs. orjson writes each float32 in its shortest exact form, so the body is ~40% smaller
    and parses back to the very same float32 values. The schema is unchanged (`response_model` documents it).
    """
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _unix_seconds(iso: str) -> int:
    """ensemble.json's created_at (ISO 8601) as Unix seconds; 0 when absent or unreadable."""
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return 0


def openai_embeddings_response(vectors: np.ndarray, model: str, tokens: int, as_base64: bool = False) -> Response:
    """The /v1/embeddings answer for these vectors (also what benchmarks.load.json_encode times)."""
    rows = _float32_rows(vectors)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(vec.tobytes()).decode("ascii") if as_base64 else vec,
        }
        for i, vec in enumerate(rows)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _vector_json({"object": "list", "data": data, "model": model, "usage": usage})


def _errors(*statuses: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give, in the shape it gives them."""
    model = OpenAIErrorResponse if openai else ErrorResponse
    return {status: {"model": model, "description": _ERROR_DESCRIPTIONS[status]} for status in statuses}


def create_router(engine: Engine) -> APIRouter:
    """All routes, bound to one engine."""
    router = APIRouter()

    async def require_api_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        api_key: Annotated[str | None, Security(KEY_HEADER)],
    ) -> None:
        """Runs before the body is validated, so a keyless caller learns about the key first."""
        engine.authorize(credentials.credentials if credentials is not None else api_key)

    @router.post(
        "/search",
        tags=["retrieval"],
        summary="Nearest indexed sentences for one or more queries",
        responses=_errors(413, 422, 429, 503),
    )
    async def search(body: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        queries, field = body.texts()
        override = None if body.fusion is None else FusionOverride(body.fusion.method, body.fusion.weights)
        found = await engine.search(
            queries, body.k, body.langs, override, field=field, rescore=body.rescore, query_lang=body.query_lang
        )
        used = engine.fusion_for(override)
        return SearchResponse(
            results=[
                QueryResult(query=q, hits=[Hit(**asdict(h)) for h in hits])
                for q, hits in zip(queries, found, strict=True)
            ],
            fusion=FusionUsed(method=used.method, weights=list(used.weights)),
            rescore=engine.rescore_for(body.rescore, used, body.query_lang),
            query_lang=body.query_lang or None,
            model=engine.model_name,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    @router.post(
        "/embed",
        tags=["retrieval"],
        summary="Fused, unit-norm embeddings (the vectors the index stores)",
        response_model=EmbedResponse,
        responses=_errors(413, 422, 429, 503),
    )
    async def embed(body: EmbedRequest) -> Response:
        result = await engine.embed(body.texts)
        vectors = _float32_rows(result.vectors)
        answer = {"embeddings": vectors, "dim": int(vectors.shape[1]), "model": engine.model_name}
        return _vector_json(answer | {"tokens": result.tokens})

    @router.post(
        "/v1/embeddings",
        tags=["openai"],
        summary="OpenAI-compatible embeddings",
        response_model=OpenAIEmbeddingResponse,
        responses=_errors(404, 413, 422, 429, 503, openai=True),
    )
    async def openai_embeddings(body: OpenAIEmbeddingRequest) -> Response:
        served = engine.model_name
        if body.model is not None and body.model != served:
            # 404 as OpenAI answers "model_not_found": the openai client raises NotFoundError, no retries.
            raise NotFound(f"model: {body.model!r} is not served here; this service serves {served!r}")
        dim = engine.repo.ensemble.dim if engine.repo is not None else None
        if body.dimensions is not None and dim is not None and body.dimensions != dim:
            raise InvalidInput(
                f"dimensions: this model returns {dim}-dimensional embeddings and does not truncate; "
                f"omit dimensions or pass {dim}"
            )
        texts = [body.input] if isinstance(body.input, str) else body.input
        result = await engine.embed(texts, field="input")
        return openai_embeddings_response(result.vectors, served, result.tokens, body.encoding_format == "base64")

    @router.post(
        "/sentences",
        status_code=201,
        tags=["index"],
        summary="Embed and index sentences (durable on return)",
        dependencies=[Depends(require_api_key)],
        responses=_errors(401, 403, 413, 422, 429, 503),
    )
    async def add_sentences(body: AddSentencesRequest) -> AddSentencesResponse:
        sentences = [Sentence(id=s.id or "", text=s.text, lang=s.lang, metadata=s.metadata) for s in body.sentences]
        ids = await engine.add_sentences(sentences)
        return AddSentencesResponse(ids=ids, count=len(ids))

    @router.get(
        "/sentences/{sentence_id:path}",
        tags=["index"],
        summary="Read one stored sentence (text, language, metadata)",
        responses=_errors(404, 503),
    )
    async def get_sentence(sentence_id: str) -> SentenceOut:
        found = engine.get_sentence(sentence_id)
        return SentenceOut(id=found.id, text=found.text, lang=found.lang, metadata=found.metadata)

    @router.delete(
        "/sentences/{sentence_id:path}",
        tags=["index"],
        summary="Delete one sentence",
        dependencies=[Depends(require_api_key)],
        responses=_errors(401, 403, 404, 503),
    )
    async def delete_sentence(sentence_id: str) -> DeleteResponse:
        return DeleteResponse(deleted=await engine.delete_sentences([sentence_id]))

    @router.delete(
        "/sentences",
        tags=["index"],
        summary="Delete several sentences (all or nothing)",
        dependencies=[Depends(require_api_key)],
        responses=_errors(401, 403, 404, 413, 422, 503),
    )
    async def delete_sentences(body: DeleteSentencesRequest) -> DeleteResponse:
        return DeleteResponse(deleted=await engine.delete_sentences(body.ids))

    @router.get(
        "/v1/models",
        tags=["openai"],
        summary="OpenAI-compatible model list: the one served model",
        responses=_errors(503, openai=True),
    )
    async def openai_models() -> OpenAIModelList:
        # OpenAI-style tools list models before they embed; one repository is one model
        created = engine.repo.ensemble.created_at if engine.repo is not None else ""
        return OpenAIModelList(data=[OpenAIModel(id=engine.model_name, created=_unix_seconds(created))])

    # HEAD too (undocumented: it is GET without the body): uptime monitors probe with it, and 405 reads as down
    @router.head("/healthz", include_in_schema=False)
    @router.get("/healthz", tags=["operations"], summary="Liveness: 200 whenever the process serves HTTP")
    async def healthz() -> HealthResponse:
        return HealthResponse()

    @router.head("/readyz", include_in_schema=False)
    @router.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: 200 when requests can be served (possibly degraded), else 503",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Not ready (starting or stopping)."}},
    )
    async def readyz() -> JSONResponse:
        state = ReadyResponse(**await engine.readiness())
        return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)

    @router.get("/stats", tags=["operations"], summary="Index, cache and uptime figures", responses=_errors(503))
    async def stats() -> StatsResponse:
        return StatsResponse(**engine.stats())

    @router.get("/info", tags=["operations"], summary="What is served: members, fusion, dims", responses=_errors(503))
    async def info() -> InfoResponse:
        return InfoResponse(**engine.info())

    @router.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
