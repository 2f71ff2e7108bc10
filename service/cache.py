"""Caches for query embeddings and search results: Redis when shared, an in-process LRU otherwise.

A cache is an optimisation, never a dependency: every failure of the Redis backend turns into a
miss (reads) or a no-op (writes), the service keeps answering uncached and reports "degraded".
This is the only module that imports redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.errors import StartupError

log = logging.getLogger("xret.cache")

_VECTOR_DTYPE = np.dtype("<f4")  # fixed byte order so replicas on any platform read each other's entries

# Writes the entries, records their write time in the index sorted set, then drops what is over the
# bound. A script (not a MULTI pipeline) because the trim must read which keys are oldest before it
# can delete them, and it must be atomic so concurrent writers from several replicas cannot overshoot.
# The time comes from Redis (TIME) so replicas with skewed clocks still agree on the order.
# KEYS[1] = index, KEYS[2..] = entries; ARGV[1] = ttl_s, ARGV[2] = max_entries, ARGV[3..] = values.
_SET_AND_TRIM = """
local ttl = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
  redis.call('ZADD', KEYS[1], now_ms, KEYS[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - ttl * 1000)
local excess = redis.call('ZCARD', KEYS[1]) - cap
if excess > 0 then
  for _, victim in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
    redis.call('DEL', victim)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
end
redis.call('EXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""


class Cache(Protocol):
    """What the engine needs from a cache; both backends answer every call without raising."""

    name: str

    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    async def set_many(self, items: dict[str, bytes]) -> None: ...

    def status(self) -> str: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


def cache_key(*parts: str) -> str:
    """Hash the parts into a fixed-size key; each part is length-prefixed so ("a", "bc") != ("ab", "c").

    Hashing keeps keys short whatever the text length and keeps user text out of Redis key names.
    """
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        h.update(f"{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def encode_vector(v: np.ndarray) -> bytes:
    """Raw little-endian float32 bytes: no header needed because the dimension follows from the length."""
    arr = np.asarray(v)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"encode_vector needs a non-empty 1-D vector, got shape {arr.shape}")
    return arr.astype(_VECTOR_DTYPE, copy=False).tobytes()


def decode_vector(b: bytes) -> np.ndarray:
    """Inverse of encode_vector; returns a writable native float32 copy so callers may normalise in place."""
    if len(b) == 0 or len(b) % _VECTOR_DTYPE.itemsize:
        raise ValueError(f"cached vector has {len(b)} bytes, not a positive multiple of 4 (float32)")
    return np.frombuffer(b, dtype=_VECTOR_DTYPE).astype(np.float32)


class MemoryCache:
    """Bounded in-process LRU: the default when no Redis is configured; max_entries=0 disables it.

    A lock (not just the event loop) guards the dict because encoder threads or a second loop may
    share one instance; each operation is short, so contention is negligible.
    """

    name: str = "memory"

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise StartupError(f"cache size must be >= 0 (0 disables the cache), got {max_entries}")
        self._max = max_entries
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        with self._lock:
            for key in keys:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                out.append(value)
            hits = sum(v is not None for v in out)
            self._hits += hits
            self._misses += len(out) - hits
        return out

    async def set_many(self, items: dict[str, bytes]) -> None:
        if self._max == 0:
            return
        with self._lock:
            for key, value in items.items():
                self._data[key] = value
                self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def status(self) -> str:
        return "ok"

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        with self._lock:
            self._data.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": self.name,
                "entries": len(self._data),
                "max_entries": self._max,
                "hits": self._hits,
                "misses": self._misses,
                "errors": 0,
                "status": "ok",
            }


class RedisCache:
    """Shared cache in Redis that degrades to "always miss" while Redis is unreachable.

    Layout: entries are ``<namespace>:<key>`` strings with a TTL; ``<namespace>:_index`` is a sorted
    set of those keys scored by last write time (ms, Redis clock). Every write trims the set to
    ``max_entries`` and deletes the oldest-written entries with it, so we never grow past the bound
    even if the operator runs Redis without maxmemory. Reads do not refresh recency (that would turn
    every hit into a write); entries live until the TTL or until newer writes push them out. Replicas
    sharing a namespace share the bound. If Redis evicts the index itself, the TTLs still bound us.
    Keys are expected to come from cache_key (hex), so they never collide with ``_index``. The trim
    runs as one Lua script, which a Redis Cluster would reject (keys in different slots): single
    Redis (or a primary with replicas) only.

    Outage handling: the first failure logs one warning and marks the cache degraded; for
    ``retry_after_s`` afterwards calls skip Redis entirely (no timeouts paid per request, no
    hammering), then exactly one call probes it again. The first success logs the recovery.
    """

    name: str = "redis"

    def __init__(
        self,
        url: str,
        ttl_s: int,
        max_entries: int,
        namespace: str = "xret",
        *,
        timeout_s: float = 0.3,
        retry_after_s: float = 1.0,
    ) -> None:
        if ttl_s < 1:
            raise StartupError(f"cache TTL must be >= 1 s, got {ttl_s}")
        if max_entries < 1:
            raise StartupError(f"Redis cache needs max_entries >= 1, got {max_entries}")
        if not namespace:
            raise StartupError("Redis cache namespace must not be empty")
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise StartupError(
                f"Redis URL must start with redis://, rediss:// or unix://, got scheme {parts.scheme!r}"
            )
        # Where we connect, without credentials, for log lines and messages.
        self._where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        try:
            # No client-side retries: a retry loop against a dead server is exactly the stall we avoid;
            # our own backoff decides when to try again.
            self._client = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as e:
            raise StartupError(f"bad Redis URL {self._where!r}: {e}") from e
        self._ttl = ttl_s
        self._max = max_entries
        self._prefix = f"{namespace}:"
        self._index_key = f"{namespace}:_index"
        self._timeout = timeout_s
        self._retry_after = retry_after_s
        self._script = self._client.register_script(_SET_AND_TRIM)
        self._degraded = False
        self._down_since = 0.0
        self._next_try = 0.0
        self._entries: int | None = None
        self._hits = 0
        self._misses = 0
        self._errors = 0

    def _may_call(self) -> bool:
        """During an outage, let one caller per backoff period through to probe Redis."""
        if not self._degraded:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + self._retry_after
        return True

    def _failed(self, err: BaseException) -> None:
        self._errors += 1
        now = time.monotonic()
        self._next_try = now + self._retry_after
        if not self._degraded:
            self._degraded = True
            self._down_since = now
            log.warning(
                "Redis cache at %s failed (%s: %s); serving uncached until it answers again",
                self._where,
                type(err).__name__,
                err,
            )

    def _succeeded(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info(
                "Redis cache at %s is back after %.1f s", self._where, time.monotonic() - self._down_since
            )

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = [None] * len(keys)
        if self._may_call():
            try:
                raw = await asyncio.wait_for(self._client.mget([self._prefix + k for k in keys]), self._timeout)
                # decode_responses is off, so redis returns bytes (or None), never str
                values = [v if v is None or isinstance(v, bytes) else v.encode() for v in raw]
                self._succeeded()
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                self._failed(e)
        hits = sum(v is not None for v in values)
        self._hits += hits
        self._misses += len(keys) - hits
        return values

    async def set_many(self, items: dict[str, bytes]) -> None:
        if not items or not self._may_call():
            return
        keys = [self._index_key, *(self._prefix + k for k in items)]
        try:
            self._entries = int(
                await asyncio.wait_for(
                    self._script(keys=keys, args=[self._ttl, self._max, *items.values()]), self._timeout
                )
            )
            self._succeeded()
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._failed(e)

    def status(self) -> str:
        return "degraded" if self._degraded else "ok"

    async def ping(self) -> bool:
        """Readiness probe: always asks Redis (ignoring the backoff); counts our entries on the way."""
        try:
            self._entries = int(await asyncio.wait_for(self._client.zcard(self._index_key), self._timeout))
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._failed(e)
            return False
        self._succeeded()
        return True

    async def close(self) -> None:
        await self._client.aclose()  # type: ignore[attr-defined]  # types-redis 4.6 stubs predate aclose

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "entries": self._entries,
            "max_entries": self._max,
            "hits": self._hits,
            "misses": self._misses,
            "errors": self._errors,
            "status": self.status(),
        }


def make_cache(redis_url: str | None, ttl_s: int, max_entries: int) -> Cache:
    """Redis when a URL is configured, else the in-process LRU; a size of 0 disables caching outright.

    Never connects: a Redis that is down at start-up only makes the service start degraded.
    """
    if redis_url and max_entries > 0:
        return RedisCache(redis_url, ttl_s, max_entries)
    return MemoryCache(max_entries)
