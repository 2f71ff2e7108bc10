"""The load tool's own correctness: its maths, its open-loop clock, its error table, its /metrics reader.

The HTTP peer here is a real asyncio server on a real loopback socket (tiny, in the test's own
event loop, so its arrival stamps and the scheduler's plan share one clock).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from benchmarks.load.runner import LoadSpec, arrival_offsets, closed_phase, open_phase, run_load
from benchmarks.load.scenarios import recall_at_k
from benchmarks.load.server_metrics import parse_metrics, summarize_server
from benchmarks.load.stats import Sample, latency_summary_ms, percentile, summarize
from benchmarks.load.targets import OpenAIEmbeddings
from benchmarks.load.texts import TextStream, load_sentences
from service.encoders.fake import FakeEncoder
from service.metrics import EncoderTokens, Metrics


# ----------------------------------------------------------------------------------------- the maths
def test_percentiles_interpolate_between_order_statistics() -> None:
    values = [0.004, 0.001, 0.003, 0.002]  # order must not matter
    assert percentile(values, 0) == 0.001
    assert percentile(values, 100) == 0.004
    assert percentile(values, 50) == pytest.approx(0.0025)
    assert percentile(values, 90) == pytest.approx(0.0037)  # position 2.7: 0.003 + 0.7 * 0.001
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(values, 101)


def test_p99_of_a_hundred_latencies_is_near_the_worst() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    summary = latency_summary_ms(seconds)
    assert summary == {"p50": 50.5, "p90": 90.1, "p99": 99.01, "mean": 50.5, "max": 100.0}
    assert latency_summary_ms([]) == {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}


def test_summary_counts_successes_for_throughput_and_errors_by_kind() -> None:
    samples = [
        Sample(scheduled=0.0, started=0.0, finished=0.010, texts=2),
        Sample(scheduled=0.5, started=0.5, finished=0.530, texts=2),
        Sample(scheduled=1.0, started=1.2, finished=1.250, texts=2),  # sent 200 ms late: latency 250 ms
        Sample(scheduled=1.5, started=1.5, finished=1.501, texts=2, error="http_429"),
        Sample(scheduled=1.6, started=1.6, finished=1.601, texts=2, error="http_429"),
        Sample(scheduled=1.7, started=1.7, finished=1.702, texts=2, error="grpc_UNAVAILABLE"),
    ]
    out = summarize(samples, elapsed_s=2.0)
    assert (out["requests"], out["ok"]) == (6, 3)
    assert out["errors"] == {"grpc_UNAVAILABLE": 1, "http_429": 2}
    assert out["error_ratio"] == 0.5
    assert out["throughput_rps"] == 1.5  # 3 successes in 2 s; fast failures do not count
    assert out["texts_per_s"] == 3.0
    assert out["latency_ms"]["max"] == 250.0  # counted from the planned send, not the actual one
    assert out["latency_ms"]["p50"] == 30.0
    assert out["send_lag_ms"]["max"] == 200.0
    with pytest.raises(ValueError, match="positive"):
        summarize(samples, 0.0)


def test_arrival_plans_are_bounded_and_have_the_asked_rate() -> None:
    constant = arrival_offsets(rate=10, duration_s=1.0, max_requests=100, arrival="constant", seed=0)
    assert constant == pytest.approx([i / 10 for i in range(10)])
    assert len(arrival_offsets(10, 1.0, 3, "constant", 0)) == 3  # the request budget wins
    poisson = arrival_offsets(rate=200, duration_s=20.0, max_requests=100_000, arrival="poisson", seed=1)
    assert all(0 < t < 20.0 for t in poisson)
    assert poisson == sorted(poisson)
    assert len(poisson) / 20.0 == pytest.approx(200, rel=0.05)
    gaps = [b - a for a, b in itertools.pairwise(poisson)]
    cv = (sum((g - 1 / 200) ** 2 for g in gaps) / len(gaps)) ** 0.5 * 200
    assert cv == pytest.approx(1.0, abs=0.1)  # exponential gaps: std == mean
    assert poisson == arrival_offsets(200, 20.0, 100_000, "poisson", 1)  # seeded


def test_recall_compares_top_k_sets() -> None:
    exact = [["a", "b", "c"], ["d", "e", "f"]]
    assert recall_at_k(exact, exact, 3) == 1.0
    assert recall_at_k([["c", "b", "x"], ["x", "y", "z"]], exact, 3) == pytest.approx((2 / 3 + 0) / 2, abs=1e-4)


# ----------------------------------------------------------------------------------------- texts
def test_sentences_interleave_languages_and_stream_cycles(tmp_path: Path) -> None:
    (tmp_path / "tatoeba.deu-eng.deu").write_text("Hallo.\nGuten Tag.\nHallo.\n", encoding="utf-8")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("Hello.\nGood day.\n", encoding="utf-8")
    (tmp_path / "tatoeba.fra-eng.fra").write_text("Bonjour.\n\n", encoding="utf-8")
    (tmp_path / "tatoeba.fra-eng.eng").write_text("Hello.\n", encoding="utf-8")  # a repeat across files
    pairs = load_sentences(tmp_path, seed=0)
    assert sorted(t for _, t in pairs) == ["Bonjour.", "Good day.", "Guten Tag.", "Hallo.", "Hello."]
    assert [lang for lang, _ in pairs[:3]] == ["deu", "eng", "fra"]  # one of each language first
    stream = TextStream([t for _, t in pairs], per_request=2)
    first, second, third = stream.take(), stream.take(), stream.take()
    assert first + second + third[:1] == [t for _, t in pairs]
    assert third[1] == first[0]  # cycles
    assert stream.fresh_left == 0


# ----------------------------------------------------------------------------------------- a real peer
class TinyEmbeddingServer:
    """OpenAI-shaped embeddings over HTTP/1.1 keep-alive; records each request's arrival (loop clock)."""

    def __init__(self, service_s: float = 0.0) -> None:
        self.arrivals: list[float] = []
        self.service_s = service_s
        self._one_at_a_time = asyncio.Lock()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split()[1]
                length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
                body = json.loads(await reader.readexactly(length))
                self.arrivals.append(asyncio.get_running_loop().time())
                async with self._one_at_a_time:
                    await asyncio.sleep(self.service_s)
                payload: dict[str, object]
                if path == "/busy":
                    status, payload = "429 Too Many Requests", {"error": {"type": "overloaded"}}
                else:
                    status, payload = "200 OK", {"data": [{"embedding": [0.0]} for _ in body["input"]]}
                data = json.dumps(payload).encode()
                head_out = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
                writer.write(head_out.encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def tiny_server(service_s: float = 0.0) -> AsyncIterator[tuple[TinyEmbeddingServer, str]]:
    peer = TinyEmbeddingServer(service_s)
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield peer, f"http://127.0.0.1:{port}"
    finally:
        server.close()


TEXTS = [f"sentence {i}" for i in range(50)]


def test_open_loop_sends_at_the_planned_times() -> None:
    async def scenario() -> tuple[list[float], list[Sample]]:
        async with tiny_server() as (peer, url):
            target = OpenAIEmbeddings("tiny", url)
            await target.open()
            try:
                offsets = arrival_offsets(rate=40, duration_s=0.6, max_requests=1000, arrival="constant", seed=0)
                samples, _ = await open_phase(target, TextStream(TEXTS, 1), offsets, max_in_flight=64)
            finally:
                await target.close()
            return sorted(peer.arrivals), sorted(samples, key=lambda s: s.scheduled)

    arrivals, samples = asyncio.run(scenario())
    assert len(samples) == len(arrivals) == 24
    assert all(s.error is None for s in samples)
    planned = [s.scheduled for s in samples]
    assert [b - a for a, b in itertools.pairwise(planned)] == pytest.approx([0.025] * 23, abs=1e-9)
    late = sorted(arrival - plan for arrival, plan in zip(arrivals, planned, strict=True))
    assert late[0] >= 0  # nothing goes out early
    assert late[len(late) // 2] < 0.010  # the server sees the plan, to within scheduling noise
    assert late[-1] < 0.060


def test_open_loop_latency_includes_queueing_when_the_server_falls_behind() -> None:
    async def scenario() -> dict[str, object]:
        async with tiny_server(service_s=0.05) as (_, url):  # serves 20/s, offered 50/s
            spec = LoadSpec(mode="open", rate=50, arrival="constant", duration_s=0.4, warmup_s=0)
            return await run_load(OpenAIEmbeddings("slow", url), TextStream(TEXTS, 1), spec)

    record = asyncio.run(scenario())
    assert record["requests"] == record["ok"] == 20
    latency = record["latency_ms"]
    assert isinstance(latency, dict)
    assert latency["max"] > 600  # the 20th request waited for 19 earlier ones (~1 s), not 50 ms
    assert latency["p50"] > 200
    lag = record["send_lag_ms"]
    assert isinstance(lag, dict)
    assert lag["p99"] < 60  # ... while every request still left on time
    assert record["offered_rps"] == 50
    assert record["server"] == {}  # no /metrics there


def test_closed_loop_keeps_n_requests_in_flight_and_reports_errors_by_kind() -> None:
    async def scenario() -> tuple[list[Sample], float, list[Sample], str]:
        async with tiny_server(service_s=0.01) as (_, url):
            target = OpenAIEmbeddings("tiny", url)
            await target.open()
            try:
                ok, elapsed = await closed_phase(target, TextStream(TEXTS, 3), 4, duration_s=0.3, max_requests=1000)
            finally:
                await target.close()
            busy = OpenAIEmbeddings("busy", url, path="/busy")
            await busy.open()
            try:
                failed, _ = await closed_phase(busy, TextStream(TEXTS, 1), 2, duration_s=5, max_requests=6)
            finally:
                await busy.close()
        refused = OpenAIEmbeddings("gone", url)  # the server is closed now
        await refused.open()
        try:
            gone, _ = await closed_phase(refused, TextStream(TEXTS, 1), 1, duration_s=5, max_requests=1)
        finally:
            await refused.close()
        return ok, elapsed, failed, str(gone[0].error)

    ok, elapsed, failed, gone = asyncio.run(scenario())
    # one request at a time inside the server, 10 ms each: about 30 answers in 0.3 s
    assert 15 <= len(ok) <= 40
    assert all(s.error is None and s.texts == 3 for s in ok)
    assert 0.3 <= elapsed < 0.6
    assert len(failed) == 6  # the request budget bounds the run, not the 5 s duration
    assert {s.error for s in failed} == {"http_429"}
    assert gone == "ConnectError"  # the same name from aiohttp (default) and httpx


# ----------------------------------------------------------------------------------------- /metrics
def test_metrics_scraper_reads_what_the_service_exports() -> None:
    metrics = Metrics()
    metrics.batch_size.observe(1)
    metrics.cache.labels("embedding", "miss").inc(3)
    before = parse_metrics(generate_latest(metrics.registry).decode())
    for size in (4, 4, 30):
        metrics.batch_size.observe(size)
        metrics.batch_tokens.observe(size * 20)
    metrics.cache.labels("embedding", "hit").inc(6)
    metrics.cache.labels("embedding", "miss").inc(2)
    metrics.cache.labels("result", "miss").inc(5)
    metrics.stage_seconds.labels("encode").observe(0.02)
    metrics.stage_seconds.labels("encode").observe(0.04)
    metrics.requests.labels("rest", "/v1/embeddings", "ok").inc(7)
    metrics.requests.labels("rest", "/metrics", "ok").inc(3)
    metrics.rejected.inc(2)
    metrics.batch_seconds.observe(0.25)
    metrics.batch_seconds.observe(0.5)
    metrics.queue_depth.set(9)
    after = parse_metrics(generate_latest(metrics.registry).decode())
    assert after["xret_queue_texts"] == 9.0
    assert after['xret_cache_total{kind="embedding",result="hit"}'] == 6.0

    out = summarize_server(before, after, queue_peak=9.0)
    assert out["batch_texts"]["count"] == 3
    assert out["batch_texts"]["mean"] == pytest.approx(38 / 3, abs=1e-3)
    assert out["batch_texts"]["buckets"]["<=4"] == 2 and out["batch_texts"]["buckets"]["<=32"] == 1
    assert out["batch_texts"]["buckets"]["<=1"] == 0  # the batch before the first scrape is not counted
    assert out["batch_padded_tokens"]["mean"] == pytest.approx(38 * 20 / 3, abs=1e-2)
    assert out["cache"]["embedding"] == {"hit": 6.0, "miss": 2.0, "hit_ratio": 0.75}
    assert out["cache"]["result"]["hit_ratio"] == 0.0
    assert out["stages"]["encode"] == {"count": 2, "mean_ms": 30.0}
    assert out["requests"] == {"rest:/v1/embeddings:ok": 7}
    assert out["rejected_texts"] == 2
    assert out["queue_peak_texts"] == 9.0
    assert out["encoder_busy_s"] == 0.75 and out["batch_seconds"]["count"] == 2
    assert summarize_server({}, {"process_cpu_seconds_total": 1.0}) == {}  # not xret: nothing to say


def test_encoder_token_counts_reach_the_scraper_summed_over_members() -> None:
    metrics = Metrics()
    members = [FakeEncoder("a", 8), FakeEncoder("b", 8)]
    metrics.registry.register(EncoderTokens(members))
    before = parse_metrics(generate_latest(metrics.registry).decode())
    members[0].tokens.add(real=30, computed=45)
    members[1].tokens.add(real=30, computed=30)
    after = parse_metrics(generate_latest(metrics.registry).decode())
    assert after['xret_encoder_tokens_total{kind="computed",member="a"}'] == 45.0
    assert summarize_server(before, after)["encoder_tokens"] == {"real": 60, "computed": 75, "computed_per_real": 1.25}


def test_client_comparison_averages_rounds_and_prices_the_client_per_request() -> None:
    from benchmarks.load.clients import summarise

    def run(system: str, texts_per_s: float, p99: float, cpu_s: float, ok: int) -> dict:
        record = {"system": system, "concurrency": 64, "texts_per_s": texts_per_s, "ok": ok, "client_cpu_s": cpu_s}
        return record | {"latency_ms": {"p99": p99}}

    summary = summarise(
        [
            run("xret-rest-httpx", 80.0, 900.0, 4.0, 800),
            run("xret-rest-httpx", 100.0, 700.0, 6.0, 1000),
            run("xret-rest-aiohttp", 150.0, 300.0, 1.5, 1500),
            run("xret-grpc", 200.0, 250.0, 1.0, 2000),
        ]
    )
    assert summary["xret-rest-httpx|c64"] == {
        "texts_per_s": 90.0,
        "p99_ms": 900.0,  # the worse round
        "client_cpu_ms_per_request": 5.5,  # (5.0 + 6.0) / 2
        "rounds": 2,
    }
    assert summary["xret-rest-aiohttp|c64"]["client_cpu_ms_per_request"] == 1.0
    assert summary["xret-grpc|c64"]["texts_per_s"] == 200.0


def test_json_encode_benchmark_checks_both_bodies_decode_to_the_same_vectors() -> None:
    from benchmarks.load.json_encode import compare, decoded, fastapi_default, service_path

    rows = compare(dim=16, rows=(1, 3), seconds=0.01)
    assert [r["texts"] for r in rows] == [1, 3]
    assert all(r["service_bytes"] < r["fastapi_default_bytes"] and r["service_ms"] > 0 for r in rows)
    vectors = np.array([[0.1, -0.25, 1 / 3]], dtype=np.float32)
    np.testing.assert_array_equal(decoded(service_path(vectors)), vectors)
    np.testing.assert_array_equal(decoded(fastapi_default()(vectors)), vectors)
    assert b"0.1," in service_path(vectors)  # float32's shortest form, where float64 writes 0.10000000149011612


def test_packing_rounds_pair_systems_within_a_round_only(tmp_path: Path) -> None:
    from benchmarks.load.packing_ab import summarise

    def run(system: str, round_no: int, texts_per_s: float, concurrency: int = 32, per_request: int = 1) -> dict:
        record = {"system": system, "round": round_no, "concurrency": concurrency, "texts_per_request": per_request}
        return record | {"texts_per_s": texts_per_s, "latency_ms": {"p99": 100.0 + round_no}}

    summary = summarise(
        [
            run("xret-packed", 0, 300.0),
            run("xret-padded", 0, 250.0),
            run("infinity", 0, 200.0),
            run("xret-packed", 1, 150.0),  # the machine slowed down for the whole round
            run("xret-padded", 1, 125.0),
            run("xret-packed", 2, 220.0),  # infinity missing from this round: its ratios leave it out
            run("xret-padded", 2, 200.0),
            run("xret-packed", 0, 400.0, concurrency=4, per_request=32),
            run("xret-padded", 0, 320.0, concurrency=4, per_request=32),
            run("ceiling", 0, 500.0, concurrency=4, per_request=32),
        ]
    )
    one = summary["32x1"]
    assert one["packed/padded"] == {"rounds": [1.2, 1.2, 1.1], "median": 1.2}
    assert one["packed/infinity"] == {"rounds": [1.5], "median": 1.5}
    assert one["xret-packed"] == {"texts_per_s": [300.0, 150.0, 220.0], "p99_ms": [100.0, 101.0, 102.0]}
    assert summary["4x32"]["packed/padded"]["median"] == 1.25 and "padded/infinity" not in summary["4x32"]
    assert summary["4x32"]["packed/ceiling"] == {"rounds": [0.8], "median": 0.8} and "packed/ceiling" not in one
    from benchmarks.load.plot import plot_scenario

    path = tmp_path / "packing.json"
    path.write_text(json.dumps({"summary": summary}), encoding="utf-8")
    png = plot_scenario("packing", path, tmp_path / "packing.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
