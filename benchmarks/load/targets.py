"""What a load run sends: one async call per request, to REST (aiohttp or httpx) or gRPC (grpc.aio).

A target raises on any failure; `error_kind` names the failure the way an operator would look it
up (HTTP status, gRPC status code, or the exception type for transport failures), so the report's
error table tells "server said 429" apart from "connection refused" and "timed out".
Every target checks that the answer holds one result per text: a server that answered 200 with
the wrong content is an error, not throughput.

REST goes through aiohttp by default. The load generator shares the machine's cores with the
server it measures, so its own cost per request is taken from the server: httpx's AsyncClient is
known to spend far more CPU per concurrent request than aiohttp (encode/httpx#3215), which is the
first suspect for both HTTP servers collapsing at 64 clients while gRPC kept rising. `httpx` stays
selectable (`--http-client httpx`) so that earlier results can be reproduced and the two compared.
"""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp
import grpc
import httpx
import orjson

from service.grpc.stubs import xret_pb2, xret_pb2_grpc

TARGET_KINDS = ("rest-embed", "rest-search", "grpc-embed", "grpc-search", "openai-embed")
HTTP_CLIENTS = ("aiohttp", "httpx")
DEFAULT_HTTP_CLIENT = "aiohttp"
_GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


class RequestFailed(Exception):
    """A request that reached the server and came back wrong; `kind` is the error-table key."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def error_kind(exc: BaseException) -> str:
    """The error-table key of an exception raised by a target."""
    if isinstance(exc, RequestFailed):
        return exc.kind
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"grpc_{exc.code().name}"
    # the same transport failure reads the same whichever REST client met it
    if isinstance(exc, (httpx.ConnectError, aiohttp.ClientConnectorError)):
        return "ConnectError"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "Timeout"
    if isinstance(exc, (httpx.RemoteProtocolError, aiohttp.ServerDisconnectedError)):
        return "Disconnected"
    return type(exc).__name__


class Target(Protocol):
    """One endpoint under load; `call` may run many times concurrently between open and close."""

    name: str

    async def open(self) -> None: ...

    async def call(self, texts: list[str]) -> None: ...

    async def close(self) -> None: ...


class _Http:
    """A pooled REST client sized for the run, so the client never queues behind too few sockets."""

    def __init__(self, base_url: str, timeout_s: float, connections: int, client: str = DEFAULT_HTTP_CLIENT) -> None:
        if client not in HTTP_CLIENTS:
            raise ValueError(f"unknown http client {client!r}; expected one of {', '.join(HTTP_CLIENTS)}")
        self.base_url = base_url.rstrip("/")
        self.client = client
        self._timeout_s = timeout_s
        self._connections = connections
        self._httpx: httpx.AsyncClient | None = None
        self._aiohttp: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self.client == "httpx":
            limits = httpx.Limits(max_connections=self._connections, max_keepalive_connections=self._connections)
            self._httpx = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout_s, limits=limits)
        else:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections)
            timeout = aiohttp.ClientTimeout(total=self._timeout_s)
            self._aiohttp = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        if self._httpx is not None:
            response = await self._httpx.post(path, json=body)
            if response.status_code != 200:
                raise RequestFailed(f"http_{response.status_code}", response.text[:200])
            return response.json()
        if self._aiohttp is not None:
            async with self._aiohttp.post(self.base_url + path, json=body) as reply:
                if reply.status != 200:
                    raise RequestFailed(f"http_{reply.status}", (await reply.text())[:200])
                return orjson.loads(await reply.read())  # the client's parse cost is taken from the server too
        raise RuntimeError("target is not open")

    async def close(self) -> None:
        if self._httpx is not None:
            await self._httpx.aclose()
            self._httpx = None
        if self._aiohttp is not None:
            await self._aiohttp.close()
            self._aiohttp = None


def _expect(count: int, got: int, what: str) -> None:
    if got != count:
        raise RequestFailed("bad_answer", f"{got} {what} for {count} texts")


class OpenAIEmbeddings:
    """POST an OpenAI embeddings request: xret's /v1/embeddings or a peer's (infinity: /embeddings).

    `text_prefix` is prepended on the client for peers that do not add the model's prefix
    themselves, so every system embeds exactly the same token sequences.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        path: str = "/v1/embeddings",
        model: str | None = None,
        text_prefix: str = "",
        encoding_format: str = "float",
        timeout_s: float = 60.0,
        connections: int = 256,
        http_client: str = DEFAULT_HTTP_CLIENT,
    ) -> None:
        self.name = name
        self._http = _Http(base_url, timeout_s, connections, http_client)
        self._path = path
        self._model = model
        self._prefix = text_prefix
        self._format = encoding_format

    async def open(self) -> None:
        await self._http.open()

    async def call(self, texts: list[str]) -> None:
        body: dict[str, Any] = {"input": [self._prefix + t for t in texts], "encoding_format": self._format}
        if self._model is not None:
            body["model"] = self._model
        answer = await self._http.post(self._path, body)
        _expect(len(texts), len(answer.get("data", [])), "embeddings")

    async def close(self) -> None:
        await self._http.close()


class RestSearch:
    """POST /search with k hits per query (optionally language-filtered)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        k: int = 10,
        langs: list[str] | None = None,
        timeout_s: float = 60.0,
        connections: int = 256,
        http_client: str = DEFAULT_HTTP_CLIENT,
    ) -> None:
        self.name = name
        self._http = _Http(base_url, timeout_s, connections, http_client)
        self._k = k
        self._langs = langs

    async def open(self) -> None:
        await self._http.open()

    async def call(self, texts: list[str]) -> None:
        body: dict[str, Any] = {"queries": texts, "k": self._k}
        if self._langs:
            body["langs"] = self._langs
        answer = await self._http.post("/search", body)
        _expect(len(texts), len(answer.get("results", [])), "results")

    async def close(self) -> None:
        await self._http.close()


class _Grpc:
    def __init__(self, target: str, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self.stub: Any = None

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target, options=_GRPC_OPTIONS)
        await self._channel.channel_ready()
        self.stub = xret_pb2_grpc.RetrievalStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class GrpcEmbed:
    """xret.v1.Retrieval/Embed."""

    def __init__(self, name: str, target: str, timeout_s: float = 60.0) -> None:
        self.name = name
        self._grpc = _Grpc(target, timeout_s)

    async def open(self) -> None:
        await self._grpc.open()

    async def call(self, texts: list[str]) -> None:
        reply = await self._grpc.stub.Embed(xret_pb2.EmbedRequest(texts=texts), timeout=self._grpc.timeout_s)
        _expect(len(texts), len(reply.embeddings), "embeddings")

    async def close(self) -> None:
        await self._grpc.close()


class GrpcSearch:
    """xret.v1.Retrieval/Search with k hits per query."""

    def __init__(self, name: str, target: str, k: int = 10, timeout_s: float = 60.0) -> None:
        self.name = name
        self._grpc = _Grpc(target, timeout_s)
        self._k = k

    async def open(self) -> None:
        await self._grpc.open()

    async def call(self, texts: list[str]) -> None:
        request = xret_pb2.SearchRequest(queries=texts, k=self._k)
        reply = await self._grpc.stub.Search(request, timeout=self._grpc.timeout_s)
        _expect(len(texts), len(reply.results), "results")

    async def close(self) -> None:
        await self._grpc.close()


def make_target(
    kind: str,
    *,
    name: str,
    url: str = "",
    grpc_target: str = "",
    k: int = 10,
    model: str | None = None,
    path: str | None = None,
    text_prefix: str = "",
    connections: int = 256,
    http_client: str = DEFAULT_HTTP_CLIENT,
) -> Target:
    """A target by its command-line kind (see TARGET_KINDS); `http_client` picks the REST client library."""
    if kind in ("rest-embed", "openai-embed"):
        default_path = "/v1/embeddings" if kind == "rest-embed" else "/embeddings"
        return OpenAIEmbeddings(
            name,
            url,
            path or default_path,
            model=model,
            text_prefix=text_prefix,
            connections=connections,
            http_client=http_client,
        )
    if kind == "rest-search":
        return RestSearch(name, url, k=k, connections=connections, http_client=http_client)
    if kind == "grpc-embed":
        return GrpcEmbed(name, grpc_target)
    if kind == "grpc-search":
        return GrpcSearch(name, grpc_target, k=k)
    raise ValueError(f"unknown target kind {kind!r}; expected one of {', '.join(TARGET_KINDS)}")
