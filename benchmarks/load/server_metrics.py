"""Server-side figures of a run: xret's /metrics scraped before and after, and polled during it.

Client latency says how slow; these say why: how large the encoder batches really were, how many
padded tokens each carried (and how many tokens the encoders really computed after bucketing or packing),
how long the encoders were busy against the run's length (did they wait for work?), whether the queue
filled, how often the cache answered, and where the server spent its time per stage. Counters and
histograms are differenced (after - before), so the figures belong to the measured phase only; the queue
gauge is polled because only its peak matters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Scrape = dict[str, float]
POLL_INTERVAL_S = 0.25


def sample_key(name: str, labels: dict[str, str]) -> str:
    """`name{a="x",b="y"}` with labels sorted: one stable key per time series."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_metrics(text: str) -> Scrape:
    """Every sample of a Prometheus text exposition, by `sample_key`."""
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample_key(sample.name, sample.labels)] = float(sample.value)
    return out


def _delta(before: Scrape, after: Scrape, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _series(scrape: Scrape, name: str) -> dict[str, dict[str, str]]:
    """Keys of the series of `name`, with their labels parsed back."""
    out: dict[str, dict[str, str]] = {}
    for key in scrape:
        if key == name or key.startswith(name + "{"):
            labels = {}
            if "{" in key:
                for part in key[len(name) + 1 : -1].split(","):
                    k, _, v = part.partition("=")
                    labels[k] = v.strip('"')
            out[key] = labels
    return out


def _histogram(before: Scrape, after: Scrape, name: str) -> dict[str, Any]:
    """Count, mean and per-bucket counts (not cumulative) of one unlabelled histogram."""
    count = _delta(before, after, f"{name}_count")
    total = _delta(before, after, f"{name}_sum")
    cumulative = sorted(
        (float(labels["le"]), _delta(before, after, key)) for key, labels in _series(after, f"{name}_bucket").items()
    )
    buckets: dict[str, int] = {}
    previous = 0.0
    for le, cum in cumulative:
        label = "+Inf" if le == float("inf") else f"{le:g}"
        buckets[f"<={label}"] = round(cum - previous)
        previous = cum
    return {"count": round(count), "mean": round(total / count, 3) if count else None, "buckets": buckets}


def _encoder_tokens(before: Scrape, after: Scrape) -> dict[str, Any]:
    """Real and computed tokens over all members, and computed / real: the padding overhead really paid."""
    totals = {"real": 0.0, "computed": 0.0}
    for key, labels in _series(after, "xret_encoder_tokens_total").items():
        totals[labels["kind"]] = totals.get(labels["kind"], 0.0) + _delta(before, after, key)
    real, computed = totals["real"], totals["computed"]
    return {
        "real": round(real),
        "computed": round(computed),
        "computed_per_real": round(computed / real, 4) if real else None,
    }


def summarize_server(before: Scrape, after: Scrape, queue_peak: float | None = None) -> dict[str, Any]:
    """What the server did between two scrapes; {} when the endpoint is not xret's."""
    if not any(key.startswith("xret_") for key in after):
        return {}
    cache: dict[str, dict[str, float | None]] = {}
    for key, labels in _series(after, "xret_cache_total").items():
        kind = cache.setdefault(labels["kind"], {"hit": 0.0, "miss": 0.0})
        kind[labels["result"]] = _delta(before, after, key)
    for kind in cache.values():
        looked_up = (kind["hit"] or 0.0) + (kind["miss"] or 0.0)
        kind["hit_ratio"] = round((kind["hit"] or 0.0) / looked_up, 4) if looked_up else None
    stages = {}
    for key, labels in _series(after, "xret_stage_seconds_count").items():
        count = _delta(before, after, key)
        total = _delta(before, after, key.replace("_count", "_sum", 1))
        if count:
            stages[labels["stage"]] = {"count": round(count), "mean_ms": round(total / count * 1000, 3)}
    requests = {}
    for key, labels in _series(after, "xret_requests_total").items():
        n = _delta(before, after, key)
        if n and labels["method"] != "/metrics":  # our own polling is not load
            requests[f"{labels['transport']}:{labels['method']}:{labels['outcome']}"] = round(n)
    return {
        "encoder_tokens": _encoder_tokens(before, after),
        "batch_texts": _histogram(before, after, "xret_batch_texts"),
        "batch_seconds": _histogram(before, after, "xret_batch_seconds"),
        "encoder_busy_s": round(_delta(before, after, "xret_batch_seconds_sum"), 3),
        "batch_padded_tokens": _histogram(before, after, "xret_batch_padded_tokens"),
        "queue_peak_texts": queue_peak,
        "rejected_texts": round(_delta(before, after, "xret_rejected_total")),
        "cache": cache,
        "stages": stages,
        "requests": requests,
    }


async def scrape(client: httpx.AsyncClient, url: str) -> Scrape:
    """One scrape; an endpoint without /metrics (a peer) gives an empty scrape, not an error."""
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    try:
        return parse_metrics(response.text)
    except ValueError:
        return {}


class MetricsWatch:
    """Before/after scrapes plus the queue gauge's peak, polled while the measured phase runs."""

    def __init__(self) -> None:
        self.before: Scrape = {}
        self.after: Scrape = {}
        self.queue_peak: float | None = None

    def summary(self) -> dict[str, Any]:
        return summarize_server(self.before, self.after, self.queue_peak)


@asynccontextmanager
async def watch_metrics(base_url: str | None) -> AsyncIterator[MetricsWatch]:
    """Scrape `base_url`/metrics around the block; a None URL (in-process peers) records nothing."""
    watch = MetricsWatch()
    if base_url is None:
        yield watch
        return
    url = base_url.rstrip("/") + "/metrics"
    async with httpx.AsyncClient(timeout=10.0) as client:
        watch.before = await scrape(client, url)

        async def poll() -> None:
            while True:
                await asyncio.sleep(POLL_INTERVAL_S)
                depth = (await scrape(client, url)).get("xret_queue_texts")
                if depth is not None:
                    watch.queue_peak = max(watch.queue_peak or 0.0, depth)

        poller = asyncio.create_task(poll()) if watch.before else None
        try:
            yield watch
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            watch.after = await scrape(client, url)
