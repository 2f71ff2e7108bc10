"""Prometheus metrics, defined once so every module reports into the same names.

A private registry (not the global default) lets tests build several engines in one process
without "duplicated timeseries" errors, and keeps /metrics to what xret itself measures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from service.encoders.base import Encoder

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All service metrics on one registry; one instance per engine."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xret_requests_total",
            "Requests by transport, method and outcome.",
            ["transport", "method", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "xret_request_seconds",
            "Request latency by transport and method.",
            ["transport", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "xret_batch_texts",
            "Texts per encoder batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "xret_batch_padded_tokens",
            "Texts x longest text's tokens per encoder batch: the batcher's budget measure. What the encoders "
            'computed after bucketing or packing is xret_encoder_tokens_total{kind="computed"}.',
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "xret_batch_seconds",
            "Wall time of each encoder batch in its worker thread; the sum over a period divided by the period "
            "is how busy the encoders were (below 1 per batch in flight: they waited for work).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "xret_queue_texts",
            "Texts waiting in the micro-batch queue.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "xret_rejected_total",
            "Texts rejected because the queue was full.",
            registry=self.registry,
        )
        self.cache = Counter(
            "xret_cache_total",
            "Cache lookups by cache kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "xret_stage_seconds",
            "Time spent per pipeline stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.index_size = Gauge("xret_index_sentences", "Sentences in the index.", registry=self.registry)
        self.search_batch_queries = Histogram(
            "xret_search_batch_queries",
            "Query rows per index search call (concurrent requests with the same k, languages and fusion share one).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.search_batch_requests = Histogram(
            "xret_search_batch_requests",
            "Search requests served by one index search call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )


class EncoderTokens(Collector):
    """`xret_encoder_tokens_total{member, kind}`, read from the encoders' own counts at each scrape.

    kind="real" counts the texts' tokens, kind="computed" the session inputs' size (padding included), so
    computed / real over a run is the padding overhead of the serving mode (bucketed padding or packing).
    """

    def __init__(self, encoders: Sequence[Encoder]) -> None:
        self._encoders = list(encoders)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "xret_encoder_tokens",
            "Tokens per encoder: real = the texts' own, computed = what the model ran on (padding included).",
            labels=["member", "kind"],
        )
        for encoder in self._encoders:
            real, computed = encoder.tokens.snapshot()
            family.add_metric([encoder.name, "real"], real)
            family.add_metric([encoder.name, "computed"], computed)
        yield family
