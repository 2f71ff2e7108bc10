"""RedisCache against real Redis servers: the shared one on 6379 and throwaway ones we start and kill.

Every test writes under its own namespace in db 15 and deletes its keys afterwards; nothing here
flushes a database, so the suite is safe to run against a Redis that other things use.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from service.cache import RedisCache, cache_key, decode_vector, encode_vector

SHARED_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[redis.Redis]:
    """The Redis CI provides; missing it is a broken environment, so fail loudly instead of skipping."""
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(
            f"Redis is not reachable at {SHARED_URL} ({e}). These tests need a real Redis: start one with "
            "`redis-server --daemonize yes` (CI runs it as a service).",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture
def namespace(shared_redis: redis.Redis) -> Iterator[str]:
    ns = f"xret:test-{uuid.uuid4().hex}"
    yield ns
    ours = list(shared_redis.scan_iter(match=f"{ns}:*", count=1000))
    if ours:
        shared_redis.delete(*ours)


def our_keys(client: redis.Redis, namespace: str) -> set[bytes]:
    return set(client.scan_iter(match=f"{namespace}:*", count=1000))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server process on a fixed port, so it can be killed and restarted in place."""

    def __init__(self, port: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH; install Redis (CI has it) to run the recovery test")
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        # Throwaway server: nothing is written to disk.
        self.command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        self.command += ["--appendonly", "no"]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.kill()


def test_round_trip_and_stats(namespace: str) -> None:
    async def scenario() -> None:
        cache = RedisCache(SHARED_URL, 60, 100, namespace=namespace)
        await cache.set_many({"k1": b"one", "k2": b"\x00\xffbinary"})
        assert await cache.get_many(["k1", "missing", "k2"]) == [b"one", None, b"\x00\xffbinary"]
        await cache.set_many({"k1": b"uno"})
        assert await cache.get_many(["k1"]) == [b"uno"]
        assert await cache.ping()
        stats = cache.stats()
        assert stats["backend"] == "redis" and stats["status"] == "ok"
        assert (stats["entries"], stats["hits"], stats["misses"], stats["errors"]) == (2, 3, 1, 0)
        await cache.close()

    asyncio.run(scenario())


def test_every_key_gets_a_ttl_under_our_namespace(namespace: str, shared_redis: redis.Redis) -> None:
    async def scenario() -> None:
        cache = RedisCache(SHARED_URL, 42, 100, namespace=namespace)
        await cache.set_many({cache_key("a"): b"1", cache_key("b"): b"2"})
        await cache.close()

    asyncio.run(scenario())
    keys = our_keys(shared_redis, namespace)
    assert keys == {f"{namespace}:{cache_key(p)}".encode() for p in "ab"} | {f"{namespace}:_index".encode()}
    for key in keys:
        assert 0 < shared_redis.ttl(key) <= 42, key


def test_bound_drops_the_oldest_written(namespace: str, shared_redis: redis.Redis) -> None:
    async def scenario() -> None:
        cache = RedisCache(SHARED_URL, 60, 5, namespace=namespace)
        for i in range(12):
            await cache.set_many({f"k{i}": str(i).encode()})
            await asyncio.sleep(0.003)  # distinct write times (ms resolution) make the order exact
        got = await cache.get_many([f"k{i}" for i in range(12)])
        assert got == [None] * 7 + [str(i).encode() for i in range(7, 12)]
        assert cache.stats()["entries"] == 5
        # One batch larger than the bound still leaves at most the bound behind.
        await cache.set_many({f"big{i}": b"x" for i in range(20)})
        assert cache.stats()["entries"] == 5
        await cache.close()

    asyncio.run(scenario())
    keys = our_keys(shared_redis, namespace)
    assert len(keys) == 5 + 1  # five entries and the index
    assert shared_redis.zcard(f"{namespace}:_index") == 5


def test_vectors_survive_the_trip(namespace: str) -> None:
    async def scenario() -> None:
        cache = RedisCache(SHARED_URL, 60, 100, namespace=namespace)
        vectors = np.random.default_rng(1).standard_normal((3, 384)).astype(np.float32)
        keys = [cache_key("emb", "fp", t) for t in ("hello", "hallo", "bonjour")]
        await cache.set_many({k: encode_vector(v) for k, v in zip(keys, vectors, strict=True)})
        got = await cache.get_many(keys)
        assert all(g is not None for g in got)
        np.testing.assert_array_equal(np.stack([decode_vector(g) for g in got if g is not None]), vectors)
        await cache.close()

    asyncio.run(scenario())


def test_unreachable_redis_misses_fast_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        cache = RedisCache("redis://127.0.0.1:1", 60, 100, retry_after_s=0.05)  # nothing listens on port 1
        assert cache.status() == "ok"  # constructed without connecting
        for _ in range(10):
            started = time.perf_counter()
            assert await cache.get_many(["a", "b"]) == [None, None]
            await cache.set_many({"a": b"1"})
            assert time.perf_counter() - started < 0.5
            assert cache.status() == "degraded"
            await asyncio.sleep(0.06)  # past the backoff, so the next call really tries Redis again
        assert not await cache.ping()
        stats = cache.stats()
        assert stats["status"] == "degraded" and stats["errors"] >= 10 and stats["misses"] == 20
        await cache.close()

    with caplog.at_level(logging.WARNING, logger="xret.cache"):
        asyncio.run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1:1" in warnings[0].getMessage()


def test_backoff_skips_redis_between_probes() -> None:
    async def scenario() -> None:
        cache = RedisCache("redis://127.0.0.1:1", 60, 100, retry_after_s=60)
        await cache.get_many(["a"])
        for _ in range(50):
            await cache.get_many(["a"])
            await cache.set_many({"a": b"1"})
        assert cache.stats()["errors"] == 1  # one failure, then no traffic until the backoff ends
        await cache.close()

    asyncio.run(scenario())


def test_silent_server_times_out_instead_of_stalling() -> None:
    """A peer that accepts connections but never answers (a hung Redis) costs one short timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}"

        async def scenario() -> None:
            cache = RedisCache(url, 60, 100, timeout_s=0.2)
            started = time.perf_counter()
            assert await cache.get_many(["a"]) == [None]
            assert time.perf_counter() - started < 0.6
            assert cache.status() == "degraded"
            started = time.perf_counter()
            assert not await cache.ping()
            assert time.perf_counter() - started < 0.6
            await cache.close()

        asyncio.run(scenario())


def test_recovers_when_redis_comes_back(private_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}"

    async def scenario() -> None:
        cache = RedisCache(url, 60, 100, retry_after_s=0.2)
        await cache.set_many({"k": b"v"})
        assert await cache.get_many(["k"]) == [b"v"] and cache.status() == "ok"

        private_redis.kill()
        assert await cache.get_many(["k"]) == [None]
        assert cache.status() == "degraded"
        await cache.set_many({"k": b"v"})  # dropped silently
        assert not await cache.ping()

        private_redis.start()  # same port, empty (no persistence)
        await asyncio.sleep(0.25)  # let the backoff run out
        assert await cache.get_many(["k"]) == [None]  # this call probes Redis and finds it back
        assert cache.status() == "ok"
        await cache.set_many({"k": b"again"})
        assert await cache.get_many(["k"]) == [b"again"]
        assert await cache.ping() and cache.stats()["entries"] == 1

        private_redis.kill()  # a second outage warns again
        assert not await cache.ping() and cache.status() == "degraded"
        private_redis.start()
        assert await cache.ping() and cache.status() == "ok"  # the probe ignores the backoff
        await cache.close()

    with caplog.at_level(logging.INFO, logger="xret.cache"):
        asyncio.run(scenario())
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.INFO, logging.WARNING, logging.INFO]
