"""The REST API over real HTTP: real uvicorn, real engine on the tiny repository, real FAISS and Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.engine import Engine
from service.rest.app import create_app

SENTENCES: list[dict[str, Any]] = [
    {"id": "en-1", "text": "The cat sleeps on the warm sofa.", "lang": "eng", "metadata": {"source": "test"}},
    {"id": "en-2", "text": "I am going to the train station tomorrow.", "lang": "eng"},
    {"id": "de-1", "text": "Die Katze schläft auf dem warmen Sofa.", "lang": "deu"},
    {"id": "de-2", "text": "Ich fahre morgen zum Bahnhof.", "lang": "deu"},
    {"id": "fr-1", "text": "Le chat dort sur le canapé chaud.", "lang": "fra"},
    {"id": "fr-2", "text": "Je vais à la gare demain.", "lang": "fra"},
]


def client_for(svc: Any, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=svc.rest, timeout=30, headers=headers)


@pytest.fixture
def http(live: Any) -> Iterator[httpx.Client]:
    with client_for(live) as client:
        yield client


def add(http: httpx.Client, sentences: list[dict[str, Any]]) -> list[str]:
    r = http.post("/sentences", json={"sentences": sentences})
    assert r.status_code == 201, r.text
    ids: list[str] = r.json()["ids"]
    return ids


def search(http: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    r = http.post("/search", json=body)
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """Value of the samples of `name` with these labels (0 when absent), read with Prometheus' own parser;
    summed over the labels not given (e.g. every member), so one fully labelled series reads as itself."""
    return sum(
        float(s.value)
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_added_sentences_are_found_in_every_language_and_filtered_by_langs(http: httpx.Client) -> None:
    r = http.post("/sentences", json={"sentences": SENTENCES})
    assert r.status_code == 201, r.text
    assert r.json() == {"ids": [s["id"] for s in SENTENCES], "count": len(SENTENCES)}
    auto = add(http, [{"text": "Ein Satz ohne eigene Kennung.", "lang": "deu"}])
    assert len(auto) == 1 and auto[0]

    body = http.post("/search", json={"queries": [s["text"] for s in SENTENCES], "k": 3}).json()
    assert body["model"] and body["took_ms"] >= 0
    for sentence, result in zip(SENTENCES, body["results"], strict=True):
        top = result["hits"][0]
        assert result["query"] == sentence["text"]
        assert top["id"] == sentence["id"] and top["lang"] == sentence["lang"]
        assert top["score"] == pytest.approx(1.0, abs=1e-3)
        assert len(result["hits"]) == 3
    assert body["results"][0]["hits"][0]["metadata"] == {"source": "test"}

    german_query = SENTENCES[2]["text"]
    only_fr = search(http, query=german_query, k=10, langs=["fra"])[0]["hits"]
    assert {h["lang"] for h in only_fr} == {"fra"} and len(only_fr) == 2
    de_fr = search(http, query=german_query, k=10, langs=["deu", "fra"])[0]["hits"]
    assert {h["lang"] for h in de_fr} == {"deu", "fra"} and de_fr[0]["id"] == "de-1"
    assert len(search(http, query=german_query, k=10)[0]["hits"]) == len(SENTENCES) + 1


def test_embed_returns_unit_vectors_of_the_served_dim(http: httpx.Client) -> None:
    info = http.get("/info").json()
    r = http.post("/embed", json={"texts": ["Hello world", "Hallo Welt", "Bonjour le monde"]})
    assert r.status_code == 200, r.text
    body = r.json()
    vectors = np.asarray(body["embeddings"], dtype=np.float64)
    assert vectors.shape == (3, info["dim"]) and body["dim"] == info["dim"]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert body["model"] == info["model"] and body["tokens"] >= 3
    assert len(info["members"]) == 2 and info["members"][0]["name"]


def test_openai_route_float_and_base64_agree_with_embed(http: httpx.Client) -> None:
    texts = ["Where is the station?", "Wo ist der Bahnhof?"]
    model = http.get("/info").json()["model"]
    native = np.asarray(http.post("/embed", json={"texts": texts}).json()["embeddings"], dtype=np.float32)
    as_float = http.post("/v1/embeddings", json={"input": texts, "model": model, "encoding_format": "float"})
    as_b64 = http.post("/v1/embeddings", json={"input": texts, "model": model, "encoding_format": "base64"})
    assert as_float.status_code == 200 and as_b64.status_code == 200, as_float.text + as_b64.text
    body = as_float.json()
    assert body["object"] == "list" and body["model"] == model
    assert [d["index"] for d in body["data"]] == [0, 1] and body["data"][0]["object"] == "embedding"
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    floats = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in as_b64.json()["data"]])
    np.testing.assert_array_equal(floats, decoded)
    np.testing.assert_array_equal(floats, native)
    # float32 written in its shortest exact form (~11 characters), not float64's 17-digit repr of it
    assert len(as_float.content) < 13 * floats.size + 300  # (float64 repr: ~20 per float)

    single = http.post("/v1/embeddings", json={"input": texts[0], "model": model, "user": "ignored", "x": 1})
    assert single.status_code == 200 and len(single.json()["data"]) == 1
    dim = floats.shape[1]
    assert http.post("/v1/embeddings", json={"input": "a", "dimensions": dim}).status_code == 200

    wrong_dim = http.post("/v1/embeddings", json={"input": "a", "dimensions": dim // 2}).json()["error"]
    assert wrong_dim["param"] == "dimensions" and str(dim) in wrong_dim["message"]
    unknown = http.post("/v1/embeddings", json={"input": "a", "model": "text-embedding-3-small"})
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert model in error["message"] and error["param"] == "model" and error["type"] == "invalid_request_error"
    tokens = http.post("/v1/embeddings", json={"input": [[1, 2, 3]], "model": model})
    assert tokens.status_code == 422 and "token arrays are not supported" in tokens.json()["error"]["message"]
    unset = http.post("/v1/embeddings", json={"input": texts[0], "encoding_format": None})  # null = float
    assert unset.status_code == 200 and unset.json()["data"][0]["embedding"] == body["data"][0]["embedding"]

    # the model list OpenAI-style tools read first: one entry, the name /v1/embeddings accepts
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [model]
    assert models["data"][0]["object"] == "model" and models["data"][0]["created"] > 1_700_000_000


def test_operational_endpoints_and_metrics_move(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    for probe in ("/healthz", "/readyz"):  # HEAD as uptime monitors send it: the status, no body
        head = http.head(probe)
        assert head.status_code == 200 and head.content == b"", probe
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["status"] == "ok"
    before = http.get("/metrics")
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    for name in ("xret_requests_total", "xret_batch_texts", "xret_queue_texts", "xret_cache_total"):
        assert name in before.text
    add(http, SENTENCES[:2])
    search(http, query="cats and sofas", k=2)
    search(http, query="cats and sofas", k=2)
    http.post("/search", json={"query": ""})
    after = http.get("/metrics").text

    ok = {"transport": "rest", "method": "/search", "outcome": "ok"}
    assert sample(after, "xret_requests_total", **ok) - sample(before.text, "xret_requests_total", **ok) == 2
    bad = {"transport": "rest", "method": "/search", "outcome": "invalid_input"}
    assert sample(after, "xret_requests_total", **bad) == 1
    assert sample(after, "xret_request_seconds_count", transport="rest", method="/search") >= 3
    assert sample(after, "xret_batch_texts_count") > sample(before.text, "xret_batch_texts_count")
    assert sample(after, "xret_cache_total", kind="result", result="hit") >= 1
    assert sample(after, "xret_index_sentences") == 2
    real, computed = (
        sample(after, "xret_encoder_tokens_total", kind=kind)
        - sample(before.text, "xret_encoder_tokens_total", kind=kind)
        for kind in ("real", "computed")
    )
    assert real > 0 and computed >= real  # the encoders ran on at least the texts' own tokens

    stats = http.get("/stats").json()
    assert stats["uptime_s"] >= 0 and isinstance(stats["index"], dict) and isinstance(stats["cache"], dict)
    assert http.get("/info").json()["languages"] == {"eng": 2}


def test_delete_removes_from_search_and_second_delete_is_404(http: httpx.Client) -> None:
    add(http, SENTENCES)
    assert http.delete("/sentences/de-1").json() == {"deleted": 1}
    hits = search(http, query=SENTENCES[2]["text"], k=10)[0]["hits"]
    assert "de-1" not in {h["id"] for h in hits} and len(hits) == len(SENTENCES) - 1
    again = http.delete("/sentences/de-1")
    assert again.status_code == 404 and "de-1" in again.json()["error"]["message"]
    assert again.json()["error"]["type"] == "not_found"

    r = http.request("DELETE", "/sentences", json={"ids": ["fr-1", "missing-id"]})
    assert r.status_code == 404 and "missing-id" in r.text
    assert http.request("DELETE", "/sentences", json={"ids": ["fr-1", "fr-2"]}).json() == {"deleted": 2}
    assert http.get("/info").json()["index_size"] == len(SENTENCES) - 3


def test_a_stored_sentence_reads_back_by_id_until_deleted(http: httpx.Client) -> None:
    add(http, [SENTENCES[0], {"id": "doc/7#1", "text": "Slashes in ids.", "lang": "eng"}])
    assert http.get("/sentences/en-1").json() == {**SENTENCES[0]}  # id, text, lang and metadata as stored
    assert http.get("/sentences/doc/7%231").json() == {
        "id": "doc/7#1",
        "text": "Slashes in ids.",
        "lang": "eng",
        "metadata": None,
    }
    assert http.delete("/sentences/en-1").json() == {"deleted": 1}
    gone = http.get("/sentences/en-1")
    assert gone.status_code == 404
    assert gone.json()["error"] == {"type": "not_found", "message": "unknown sentence id 'en-1'"}


def test_sentences_survive_a_restart_on_the_same_index(service_factory: Callable[..., Any]) -> None:
    with service_factory() as svc, client_for(svc) as http:
        add(http, SENTENCES)
        http.delete("/sentences/en-2")
    with service_factory() as svc, client_for(svc) as http:
        hits = search(http, query=SENTENCES[4]["text"], k=10)[0]["hits"]
        assert hits[0]["id"] == "fr-1" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert {h["id"] for h in hits} == {s["id"] for s in SENTENCES} - {"en-2"}


def test_api_key_guards_writes_only(service_factory: Callable[..., Any]) -> None:
    with service_factory(api_key="s3cret") as svc, client_for(svc) as http:
        body = {"sentences": SENTENCES[:1]}
        missing = http.post("/sentences", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["type"] == "unauthenticated"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = http.post("/sentences", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "permission_denied"
        assert http.post("/sentences", json=body, headers={"x-api-key": "nope"}).status_code == 403
        assert http.post("/sentences", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 201
        other = {"sentences": SENTENCES[1:2]}
        assert http.post("/sentences", json=other, headers={"x-api-key": "s3cret"}).status_code == 201
        assert http.post("/sentences", json={"bad": 1}).status_code == 401  # key checked before the body
        assert http.delete("/sentences/en-1").status_code == 401
        assert http.delete("/sentences/en-1", headers={"x-api-key": "s3cret"}).json() == {"deleted": 1}
        assert search(http, query=SENTENCES[1]["text"])[0]["hits"][0]["id"] == "en-2"


JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
# (method, path, request kwargs, expected status, text the message must contain)
BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", "/search", {"json": {"query": ""}}, 422, "empty"),
    ("POST", "/search", {"json": {"query": "  \n\t "}}, 422, "empty"),
    ("POST", "/search", {"json": {"queries": []}}, 422, "at least one"),
    ("POST", "/search", {"json": {"query": "hi", "k": "ten"}}, 422, "k: "),
    ("POST", "/search", {"json": {"queries": [1]}}, 422, "queries[0]"),
    ("POST", "/search", {"json": {"queries": "not a list"}}, 422, "queries"),
    ("POST", "/search", {"json": {"query": "a", "queries": ["b"]}}, 422, "exactly one of 'query'"),
    ("POST", "/search", {"json": {"k": 3}}, 422, "exactly one of 'query'"),
    ("POST", "/search", {"json": {"queries": ["a", "b", "c", "d"]}}, 413, "max_texts_per_request=3"),
    ("POST", "/search", {"json": {"query": "x" * 51}}, 413, "max_chars_per_text=50"),
    ("POST", "/search", {"json": {"query": "hi", "k": 0}}, 422, "max_k=100"),
    ("POST", "/search", {"json": {"query": "hi", "k": 101}}, 422, "max_k=100"),
    ("POST", "/search", {"json": {"query": "hi", "langs": ["deu", "xyz"]}}, 422, "'xyz'"),
    ("POST", "/search", {"json": {"query": "hi", "lang": ["deu"]}}, 422, "lang: Extra inputs"),
    ("POST", "/search", {"content": b'{"query": "hi",', "headers": JSON}, 422, "malformed JSON"),
    ("POST", "/search", {}, 422, "body is missing"),
    ("POST", "/search", {"content": b"query=hi", "headers": FORM}, 422, "JSON object"),
    ("POST", "/search", {"json": ["hi"]}, 422, "JSON object"),
    ("POST", "/search", {"json": {"query": "x" * 200_000}}, 413, "the limit is"),
    ("POST", "/embed", {"json": {"texts": ["fine", 2]}}, 422, "texts[1]"),
    ("POST", "/embed", {"json": {"texts": ["a", "b", "c", "d"]}}, 413, "max_texts_per_request=3"),
    ("POST", "/sentences", {"json": {"sentences": [{"text": "hi", "lang": "not a lang"}]}}, 422, "lang"),
    (
        "POST",
        "/sentences",
        {"json": {"sentences": [{"text": "hi", "lang": "en", "metadata": 1}]}},
        422,
        "metadata",
    ),
    ("POST", "/sentences", {"json": {"sentences": [{"lang": "en"}]}}, 422, "sentences[0].text: Field"),
    ("POST", "/sentences", {"json": {"sentences": [{"text": "", "lang": "en"}]}}, 422, "empty"),
    ("DELETE", "/sentences", {"json": {"ids": []}}, 422, "at least one id"),
    ("DELETE", "/sentences/never-added", {}, 404, "never-added"),
    ("GET", "/nope", {}, 404, "no endpoint"),
    ("GET", "/search", {}, 405, "not allowed"),
    ("POST", "/v1/embeddings", {"json": {"input": [1, 2, 3]}}, 422, "token arrays are not supported"),
    ("POST", "/v1/embeddings", {"json": {"input": ""}}, 422, "input[0]: text is empty"),
    # JSON may escape an unpaired surrogate; the tokenizer raised TypeError on it (a 500) until stop 16
    (
        "POST",
        "/search",
        {"content": b'{"query": "ok \\ud800"}', "headers": JSON},
        422,
        "query[0]: not valid Unicode text (unpaired surrogate at 3)",
    ),
    ("POST", "/embed", {"content": b'{"texts": ["fine", "\\udfff"]}', "headers": JSON}, 422, "texts[1]: not valid"),
    # Latin-1 bytes: FastAPI answered 400 "There was an error parsing the body"
    (
        "POST",
        "/search",
        {"content": b'{"query": "\xe9t\xe9"}', "headers": JSON},
        422,
        "not valid UTF-8 (byte 0xe9 at position 11)",
    ),
    ("POST", "/v1/embeddings", {"content": b'{"input": "\xff"}', "headers": JSON}, 422, "not valid UTF-8 (byte 0xff"),
    (
        "POST",
        "/sentences",
        {"content": b'{"sentences": [{"text": "a\\ud800", "lang": "en"}]}', "headers": JSON},
        422,
        "sentences[0]: not valid Unicode text",
    ),
    ("POST", "/v1/embeddings", {"json": {"model": "x"}}, 422, "input: Field required"),
    ("POST", "/v1/embeddings", {"json": {"input": "a", "encoding_format": "int8"}}, 422, "encoding_format"),
    ("POST", "/v1/embeddings", {"json": {"input": ["a"] * 4}}, 413, "max_texts_per_request=3"),
]


def test_bad_requests_get_a_4xx_naming_the_problem(service_factory: Callable[..., Any]) -> None:
    """One service for every case (starting one per case would be slow); all mismatches reported at once."""
    failures = []
    with service_factory(max_texts_per_request=3, max_chars_per_text=50) as svc, client_for(svc) as http:
        add(http, SENTENCES[:3])
        for method, path, kwargs, status, needle in BAD_REQUESTS:
            r = http.request(method, path, **kwargs)
            try:
                message = r.json()["error"]["message"]
            except (json.JSONDecodeError, KeyError, TypeError):
                message = None
            if r.status_code != status or message is None or needle not in message or "Traceback" in r.text:
                failures.append(f"{method} {path} {str(kwargs)[:60]}: got {r.status_code} {r.text[:200]}")
        chunked = http.post("/search", content=iter([b'{"query": "', b"x" * 200_000, b'"}']), headers=JSON)
        if chunked.status_code != 413 or "bytes" not in chunked.json()["error"]["message"]:
            failures.append(f"chunked oversized body: got {chunked.status_code} {chunked.text[:200]}")
        assert http.get("/readyz").status_code == 200  # still serving after all of that
    assert not failures, "\n".join(failures)


def test_overload_answers_429_with_retry_after_and_nothing_else_fails(
    service_factory: Callable[..., Any],
) -> None:
    with service_factory(queue_size=1, max_wait_ms=50) as svc:

        def embed(i: int) -> httpx.Response:
            with client_for(svc) as http:
                return http.post("/embed", json={"texts": [f"overload probe number {i} {uuid.uuid4().hex}"]})

        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(embed, range(32)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 429}, statuses
        rejected = [r for r in responses if r.status_code == 429]
        assert rejected and 200 in statuses, statuses
        assert all(r.headers.get("retry-after") == "1" for r in rejected)
        assert all("queue" in r.json()["error"]["message"] for r in rejected)
        with client_for(svc) as http:
            metrics = http.get("/metrics").text
        overloaded = {"transport": "rest", "method": "/embed", "outcome": "overloaded"}
        assert sample(metrics, "xret_requests_total", **overloaded) == len(rejected)


def test_redis_down_degrades_but_still_answers(service_factory: Callable[..., Any]) -> None:
    with service_factory(redis_url="redis://127.0.0.1:1") as svc, client_for(svc) as http:
        add(http, SENTENCES[:2])
        assert search(http, query=SENTENCES[0]["text"])[0]["hits"][0]["id"] == "en-1"
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["ready"] is True and ready.json()["status"] == "degraded"


def test_real_redis_serves_the_second_identical_search(service_factory: Callable[..., Any]) -> None:
    # db 15 like the cache tests (never the default db); a fresh query text keeps runs independent.
    with service_factory(redis_url="redis://127.0.0.1:6379/15") as svc, client_for(svc) as http:
        assert http.get("/readyz").json()["status"] == "ok"
        add(http, SENTENCES)
        query = f"cats on a sofa {uuid.uuid4().hex}"
        hits_before = sample(http.get("/metrics").text, "xret_cache_total", kind="result", result="hit")
        first = search(http, query=query, k=3)
        second = search(http, query=query, k=3)
        hits_after = sample(http.get("/metrics").text, "xret_cache_total", kind="result", result="hit")
        assert second == first and hits_after == hits_before + 1


def test_unstarted_engine_and_crashes_answer_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    """In-process (no socket needed): an engine that is not started answers 503 + Retry-After, and an
    unexpected exception becomes a generic 500 whose details reach the log, never the client."""
    engine = Engine(Settings.model_validate({"repo": "never-loaded", "index": "never-opened"}))
    app = create_app(engine)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://xret") as client:
            return [
                await client.get("/boom"),
                await client.post("/search", json={"query": "hi"}),
                await client.get("/readyz"),
                await client.get("/healthz"),
            ]

    with caplog.at_level(logging.ERROR, logger="xret.rest"):
        crash, search_early, ready, health = asyncio.run(calls())
    assert crash.status_code == 500 and crash.json()["error"]["type"] == "internal"
    assert "secret internals" not in crash.text and "Traceback" not in crash.text
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)
    assert search_early.status_code == 503 and search_early.headers["retry-after"] == "1"
    assert search_early.json()["error"]["type"] == "unavailable"
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert health.status_code == 200
    metrics = generate_latest(engine.metrics.registry).decode()
    assert sample(metrics, "xret_requests_total", transport="rest", method="/boom", outcome="internal") == 1
    assert sample(metrics, "xret_requests_total", transport="rest", method="/search", outcome="unavailable") == 1
