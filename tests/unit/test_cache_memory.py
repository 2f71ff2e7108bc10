"""In-process LRU cache, key hashing, vector encoding and backend choice (no Redis needed)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.cache import MemoryCache, RedisCache, cache_key, decode_vector, encode_vector, make_cache
from service.errors import StartupError


def test_round_trip_and_misses() -> None:
    async def scenario() -> None:
        cache = MemoryCache(10)
        await cache.set_many({"a": b"1", "b": b"2"})
        assert await cache.get_many(["a", "x", "b"]) == [b"1", None, b"2"]
        assert await cache.get_many([]) == []
        stats = cache.stats()
        assert (stats["backend"], stats["entries"], stats["hits"], stats["misses"]) == ("memory", 2, 2, 1)
        assert cache.status() == "ok" and await cache.ping()

    asyncio.run(scenario())


def test_lru_evicts_least_recently_used_and_reads_refresh() -> None:
    async def scenario() -> None:
        cache = MemoryCache(3)
        await cache.set_many({"a": b"1", "b": b"2", "c": b"3"})
        await cache.get_many(["a"])  # a is now the most recent; b is the oldest
        await cache.set_many({"d": b"4"})
        assert await cache.get_many(["a", "b", "c", "d"]) == [b"1", None, b"3", b"4"]
        await cache.set_many({"c": b"33"})  # overwrite: no growth, new value
        assert cache.stats()["entries"] == 3
        assert await cache.get_many(["c"]) == [b"33"]

    asyncio.run(scenario())


def test_batch_larger_than_bound_keeps_the_last_written() -> None:
    async def scenario() -> None:
        cache = MemoryCache(2)
        await cache.set_many({str(i): bytes([i]) for i in range(5)})
        assert await cache.get_many(["0", "1", "2", "3", "4"]) == [None, None, None, b"\x03", b"\x04"]

    asyncio.run(scenario())


def test_zero_size_disables_the_cache() -> None:
    async def scenario() -> None:
        cache = MemoryCache(0)
        await cache.set_many({"a": b"1"})
        assert await cache.get_many(["a"]) == [None]
        assert cache.stats()["entries"] == 0

    asyncio.run(scenario())


def test_bound_holds_under_concurrent_threads() -> None:
    cache = MemoryCache(50)

    def writer(t: int) -> None:
        for i in range(300):
            asyncio.run(cache.set_many({f"{t}-{i}": b"x"}))
            asyncio.run(cache.get_many([f"{t}-{i - 1}"]))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stats = cache.stats()
    assert stats["entries"] == 50
    assert stats["hits"] + stats["misses"] == 4 * 300


def test_negative_size_is_refused() -> None:
    with pytest.raises(StartupError, match="cache size"):
        MemoryCache(-1)


def test_cache_key_is_stable_and_unambiguous() -> None:
    key = cache_key("emb", "fp", "héllo")
    assert key == cache_key("emb", "fp", "héllo")
    assert len(key) == 64 and int(key, 16) >= 0
    assert cache_key("a", "bc") != cache_key("ab", "c")
    assert cache_key("a", "") != cache_key("a")
    assert cache_key("emb", "fp", "x") != cache_key("res", "fp", "x")


def test_vector_round_trip_infers_dimension() -> None:
    rng = np.random.default_rng(0)
    for dim in (1, 7, 768):
        v = rng.standard_normal(dim)  # float64 in: stored as float32
        out = decode_vector(encode_vector(v))
        assert out.dtype == np.float32 and out.shape == (dim,)
        np.testing.assert_array_equal(out, v.astype(np.float32))
        out /= 2  # must be writable: callers normalise in place
    assert len(encode_vector(np.zeros(5, dtype=np.float32))) == 20


def test_vector_encoding_rejects_bad_shapes_and_bytes() -> None:
    with pytest.raises(ValueError, match="1-D"):
        encode_vector(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        encode_vector(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="multiple of 4"):
        decode_vector(b"\x00" * 6)
    with pytest.raises(ValueError, match="multiple of 4"):
        decode_vector(b"")


def test_make_cache_picks_the_backend_without_connecting() -> None:
    async def scenario() -> None:
        assert make_cache(None, 60, 10).name == "memory"
        assert make_cache("", 60, 10).name == "memory"
        # A closed port: constructing must not touch the network, so no failure here.
        redis_cache = make_cache("redis://127.0.0.1:1", 60, 10)
        assert redis_cache.name == "redis" and redis_cache.status() == "ok"
        await redis_cache.close()
        # Size 0 disables caching outright, even with Redis configured.
        assert make_cache("redis://127.0.0.1:1", 60, 0).name == "memory"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("url", "ttl", "size", "message"),
    [
        ("http://127.0.0.1:6379", 60, 10, "redis://"),
        ("redis://127.0.0.1:6379", 0, 10, "TTL"),
        ("redis://127.0.0.1:6379", 60, -5, "max_entries"),
        ("redis://127.0.0.1:6379?db=notadb", 60, 10, "bad Redis URL"),
        ("redis://127.0.0.1:notaport", 60, 10, "bad Redis URL"),
    ],
)
def test_bad_redis_settings_refuse_start_up(url: str, ttl: int, size: int, message: str) -> None:
    with pytest.raises(StartupError, match=message):
        RedisCache(url, ttl, size)


def test_bad_redis_url_message_hides_the_password() -> None:
    with pytest.raises(StartupError) as info:
        RedisCache("redis://user:s3cret@127.0.0.1:notaport", 60, 10)
    assert "s3cret" not in str(info.value)
