"""Append-only write-ahead log of index mutations: why an acknowledged add or delete survives a crash.

Every mutation is appended as one self-checking record and fsynced before the call returns; the
snapshot (see `index_store`) is only a shortcut so start-up need not replay everything.

Record layout (little endian)::

    b"XWAL" | payload length u64 | payload crc32 u32 | header crc32 u32 (of the 16 bytes before it)
    payload = meta length u32 | meta (UTF-8 JSON) | blob (raw bytes, e.g. float32 vectors)

A crash mid-append can only damage the *last* record (a prefix of it, or a file extended with zeros),
and that record was never acknowledged, so it is dropped with a warning and cut off the file. A bad
record followed by a valid one cannot come from a crash: that is real damage and start-up refuses.
The header has its own checksum so a flipped length cannot make the reader skip valid records.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.errors import StartupError, XretError
from service.index_store import fsync_dir

log = logging.getLogger("xret.index")

MAGIC = b"XWAL"
_HEAD = struct.Struct("<4sQI")  # magic, payload length, payload crc32
_HEAD_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _HEAD_CRC.size
_META_LEN = struct.Struct("<I")


def encode_record(meta: dict[str, Any], blob: bytes = b"") -> bytes:
    """One record as bytes; exposed so tests can build logs the way the writer does."""
    meta_bytes = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    payload = _META_LEN.pack(len(meta_bytes)) + meta_bytes + blob
    head = _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload))
    return head + _HEAD_CRC.pack(zlib.crc32(head)) + payload


def _parse(buf: mmap.mmap | bytes, offset: int) -> tuple[int, dict[str, Any], bytes] | None:
    """The record starting at `offset` as (end offset, meta, blob), or None when it is not intact."""
    size = len(buf)
    if offset + HEADER_SIZE > size:
        return None
    head = buf[offset : offset + _HEAD.size]
    magic, length, payload_crc = _HEAD.unpack(head)
    (head_crc,) = _HEAD_CRC.unpack(buf[offset + _HEAD.size : offset + HEADER_SIZE])
    if magic != MAGIC or zlib.crc32(head) != head_crc:
        return None
    end = offset + HEADER_SIZE + length
    if end > size or length < _META_LEN.size:
        return None
    payload = buf[offset + HEADER_SIZE : end]
    if zlib.crc32(payload) != payload_crc:
        return None
    (meta_len,) = _META_LEN.unpack(payload[: _META_LEN.size])
    if _META_LEN.size + meta_len > length:
        return None
    try:
        meta = json.loads(payload[_META_LEN.size : _META_LEN.size + meta_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    return end, meta, bytes(payload[_META_LEN.size + meta_len :])


def _valid_record_after(buf: mmap.mmap, offset: int) -> int | None:
    """Offset of the first intact record after `offset`, if any (tells damage from a torn tail)."""
    pos = buf.find(MAGIC, offset + 1)
    while pos != -1:
        if _parse(buf, pos) is not None:
            return pos
        pos = buf.find(MAGIC, pos + 1)
    return None


class WriteAheadLog:
    """The log file of one index folder; not thread-safe (the index serialises mutations)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if not existed:
            fsync_dir(path.parent)

    @property
    def size(self) -> int:
        """Bytes in the log now (snapshots reset it to 0)."""
        return os.fstat(self._fd).st_size

    def replay(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Yield every intact record in order; cut off a torn last record, refuse real damage.

        Run once at open, before any append: the torn tail must be gone before new records follow
        it, or the next start-up would see damage in the middle of the log.
        """
        size = self.size
        if size == 0:
            return
        with mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) as buf:
            offset = 0
            while offset < size:
                parsed = _parse(buf, offset)
                if parsed is None:
                    later = _valid_record_after(buf, offset)
                    if later is not None:
                        raise StartupError(
                            f"{self.path}: damaged record at byte {offset} with intact records after it "
                            f"(byte {later}); restore the index folder from a backup, or delete this file "
                            "to fall back to the last snapshot and lose the changes logged since"
                        )
                    log.warning(
                        "%s: dropping a torn last record (%d bytes at byte %d): a write interrupted by a "
                        "crash, never acknowledged",
                        self.path,
                        size - offset,
                        offset,
                    )
                    break
                end, meta, blob = parsed
                yield meta, blob
                offset = end
        if offset < size:
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)

    def append(self, meta: dict[str, Any], blob: bytes = b"") -> None:
        """Append one record and fsync it; on failure the log is cut back so nothing half-written stays."""
        record = encode_record(meta, blob)
        start = self.size
        try:
            view = memoryview(record)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                log.exception("%s: could not cut back a failed append", self.path)
            raise XretError(f"could not write the index log {self.path}: {exc}") from exc

    def truncate(self) -> None:
        """Empty the log once a snapshot holds everything it recorded."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    def close(self) -> None:
        """Release the file descriptor (records are already durable)."""
        os.close(self._fd)
