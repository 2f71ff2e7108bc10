"""The xret.v1.Retrieval servicer: proto <-> engine types, nothing else.

Validation, limits and errors all live in the engine so REST and gRPC answer alike; this module
only converts messages, reads the API key from metadata, and records per-call metrics. Handlers are
registered from the service descriptor (not the generated base class) so that each method gets a
request parser that turns undecodable bytes into INVALID_ARGUMENT: grpc's own parser would answer
UNKNOWN with a Python exception repr, which tells a client nothing useful.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError, Message

from service.engine import Engine
from service.errors import InvalidInput
from service.fusion import FusionOverride
from service.grpc.errors import ERROR_KIND_KEY, status_for
from service.grpc.stubs import xret_pb2
from service.index import Sentence

log = logging.getLogger("xret.grpc")

SERVICE_NAME: str = xret_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name
MAX_SAFE_INT = 2**53
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so the handler can answer INVALID_ARGUMENT.

    A gRPC deserializer runs before the handler and cannot set a status itself; returning this
    marker moves the decision to the one place that reports errors.
    """

    def __init__(self, message_type: str, reason: str) -> None:
        self.message = f"request is not a valid {message_type} message: {reason}"


def lenient_parser(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    """`message_class.FromString`, but a decode failure becomes a MalformedRequest, not an exception."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(name, str(exc) or "wire format is corrupt")

    return parse


def api_key_from(context: grpc.aio.ServicerContext) -> str | None:
    """The key from `x-api-key`, or from `authorization: Bearer <key>` (the two forms REST accepts)."""
    metadata = {str(k).lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    if metadata.get("x-api-key"):
        return metadata["x-api-key"]
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _json_number(value: Any) -> Any:
    """Struct keeps every number as a double; give integral ones back as ints, as JSON would parse them.

    Without this a sentence added over gRPC with {"year": 2020} would read back as 2020.0 over REST.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    return value


def struct_to_dict(message: Message, field: str, where: str) -> dict[str, Any] | None:
    """A Struct field as a plain dict, or None when the client did not set it.

    A Struct number can be NaN or infinite, which JSON (and so the index's store) cannot hold: that is the
    client's input naming `where`, not an internal error.
    """
    if not message.HasField(field):
        return None
    try:
        as_dict = json_format.MessageToDict(getattr(message, field))
    except ValueError as exc:
        raise InvalidInput(f"{where}: not representable as JSON ({exc})") from None
    return _json_number(as_dict)  # type: ignore[no-any-return]


def dict_to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    """A JSON-like dict as a Struct; values JSON cannot hold (tuples, paths) go through their str()."""
    if not value:
        return None
    return json_format.ParseDict(json.loads(json.dumps(value, default=str)), struct_pb2.Struct())


class RetrievalServicer:
    """Implements xret.v1.Retrieval over one engine; method names match the proto's rpc names."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def Search(
        self, request: xret_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> xret_pb2.SearchResponse:
        start = time.perf_counter()
        queries = list(request.queries)
        override = None
        if request.HasField("fusion"):
            override = FusionOverride(request.fusion.method or None, list(request.fusion.weights) or None)
        rescore = request.rescore or None
        query_lang = request.query_lang or None
        found = await self.engine.search(
            queries, request.k, list(request.langs) or None, override, rescore=rescore, query_lang=query_lang
        )
        used = self.engine.fusion_for(override)
        results = [
            xret_pb2.QueryResult(
                query=query,
                hits=[
                    xret_pb2.Hit(
                        id=hit.id,
                        text=hit.text,
                        lang=hit.lang,
                        score=hit.score,
                        metadata=dict_to_struct(hit.metadata),
                    )
                    for hit in hits
                ],
            )
            for query, hits in zip(queries, found, strict=True)
        ]
        took_ms = (time.perf_counter() - start) * 1000.0
        return xret_pb2.SearchResponse(
            results=results,
            model=self.engine.model_name,
            took_ms=took_ms,
            fusion=xret_pb2.AppliedFusion(method=used.method, weights=used.weights),
            rescore=self.engine.rescore_for(rescore, used, query_lang),
            query_lang=query_lang or "",
        )

    async def Embed(self, request: xret_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> xret_pb2.EmbedResponse:
        result = await self.engine.embed(list(request.texts))
        return xret_pb2.EmbedResponse(
            embeddings=[xret_pb2.Embedding(values=row.tolist()) for row in result.vectors],
            dim=int(result.vectors.shape[1]),
            model=self.engine.model_name,
            tokens=result.tokens,
        )

    async def AddSentences(
        self, request: xret_pb2.AddSentencesRequest, context: grpc.aio.ServicerContext
    ) -> xret_pb2.AddSentencesResponse:
        self.engine.authorize(api_key_from(context))
        sentences = [
            Sentence(
                id=s.id, text=s.text, lang=s.lang, metadata=struct_to_dict(s, "metadata", f"sentences[{i}].metadata")
            )
            for i, s in enumerate(request.sentences)
        ]
        ids = await self.engine.add_sentences(sentences)
        return xret_pb2.AddSentencesResponse(ids=ids)

    async def DeleteSentences(
        self, request: xret_pb2.DeleteSentencesRequest, context: grpc.aio.ServicerContext
    ) -> xret_pb2.DeleteSentencesResponse:
        self.engine.authorize(api_key_from(context))
        deleted = await self.engine.delete_sentences(list(request.ids))
        return xret_pb2.DeleteSentencesResponse(deleted=deleted)

    async def GetSentence(
        self, request: xret_pb2.GetSentenceRequest, context: grpc.aio.ServicerContext
    ) -> xret_pb2.GetSentenceResponse:
        found = self.engine.get_sentence(request.id)
        return xret_pb2.GetSentenceResponse(
            id=found.id, text=found.text, lang=found.lang, metadata=dict_to_struct(found.metadata)
        )

    async def Info(self, request: xret_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> xret_pb2.InfoResponse:
        info = self.engine.info()
        return xret_pb2.InfoResponse(
            model=info["model"],
            fingerprint=info["fingerprint"],
            dim=info["dim"],
            fusion_method=info["fusion"]["method"],
            fusion_weights=info["fusion"]["weights"] or [],
            members=[
                xret_pb2.MemberInfo(
                    name=m["name"],
                    base_model=m["base_model"],
                    tasks=m["tasks"],
                    layer=m["layer"],
                    dim=m["dim"],
                    text_prefix=m["text_prefix"],
                    runtime=dict_to_struct(m["runtime"]),
                )
                for m in info["members"]
            ],
            index_size=info["index_size"],
            languages=info["languages"],
            cache=info["cache"],
        )


def instrumented(engine: Engine, method: str, handler: Handler) -> Handler:
    """Wrap a handler: malformed requests and errors become statuses; count and time every call."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Message:
        start = time.perf_counter()
        outcome = "ok"
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidInput(request.message)
            return await handler(request, context)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            status = status_for(exc, method)
            outcome = status.kind
            await context.abort(status.code, status.message, trailing_metadata=((ERROR_KIND_KEY, status.kind),))
            raise AssertionError("context.abort returned") from exc  # abort always raises
        finally:
            engine.metrics.requests.labels("grpc", method, outcome).inc()
            engine.metrics.latency.labels("grpc", method).observe(time.perf_counter() - start)

    return handle


def retrieval_handler(engine: Engine) -> grpc.GenericRpcHandler:
    """All Retrieval methods, taken from the proto so a method the servicer lacks fails at start-up."""
    servicer = RetrievalServicer(engine)
    service = xret_pb2.DESCRIPTOR.services_by_name["Retrieval"]
    handlers = {}
    for method in service.methods:
        request_class = getattr(xret_pb2, method.input_type.name)
        response_class = getattr(xret_pb2, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            instrumented(engine, method.name, getattr(servicer, method.name)),
            request_deserializer=lenient_parser(request_class),
            response_serializer=response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
