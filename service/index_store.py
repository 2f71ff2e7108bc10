"""Snapshots of an index folder: the files that make start-up fast, committed so a crash cannot tear them.

Folder layout::

    manifest.json               dim, fingerprint, params, version, the live snapshot and each file's sha256
    snapshot-<version>-<tag>/   index.faiss (vector i = internal id i), sentences.jsonl (line i = id i),
                                neighbourhood.npy (float32, entry i = r of id i: hubness rescoring, see
                                service/hubness.py; absent in snapshots written before it existed)
    wal.log                     mutations after the snapshot (see `index_wal`)
    LOCK                        flock'ed while a process has the index open

A save writes a *new* snapshot folder, fsyncs it, then atomically replaces manifest.json: the manifest
rename is the single commit point. A crash before it leaves the old manifest (and the log that still
holds every change since) in charge; the half-written folder is removed at the next open. The manifest
carries its own checksum, so even a silently damaged manifest is refused instead of trusted.
This module knows files and bytes only; FAISS serialisation is passed in by `index.py`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import StartupError, XretError
from service.repository import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
SENTENCES_FILE = "sentences.jsonl"
NEIGHBOURHOOD_FILE = "neighbourhood.npy"
WAL_FILE = "wal.log"
LOCK_FILE = "LOCK"
FORMAT = 1
_SNAPSHOT_PREFIX = "snapshot-"

# One stored sentence: id, text, lang, metadata as JSON text (None when absent). Metadata stays
# serialised in memory: it is compact, it is what the files hold, and decoding per hit hands every
# caller a private copy.
Row = tuple[str, str, str, str | None]


@dataclass
class Manifest:
    """What a snapshot is and who made it; `write_snapshot` fills in `snapshot`, `files`, `saved_at`."""

    dim: int
    fingerprint: str
    params: dict[str, Any]
    version: int
    rows: int
    ivf_trained: bool
    index_id: str
    created_at: float
    snapshot: str = ""
    files: dict[str, str] = field(default_factory=dict)
    saved_at: float = 0.0
    # k of the stored neighbourhood means (0: none stored). A default, so manifests written before the
    # field existed still load; their index recomputes the means at open.
    neighbour_k: int = 0
    # what the stored means were measured against: "" the index's own sentences, "reference:<sha256 prefix>" a
    # hubness reference; an index opened with another source recomputes them.
    neighbour_source: str = ""

    def to_json(self) -> dict[str, Any]:
        body = {"format": FORMAT, **asdict(self)}
        return {**body, "checksum": _checksum(body)}

    @classmethod
    def from_json(cls, payload: Any, path: Path) -> Manifest:
        if not isinstance(payload, dict):
            raise StartupError(f"{path}: not a JSON object; the index folder is damaged")
        body = {k: v for k, v in payload.items() if k != "checksum"}
        if payload.get("checksum") != _checksum(body):
            raise StartupError(
                f"{path}: checksum mismatch (file damaged or edited); restore the index folder"
            )
        if body.pop("format", None) != FORMAT:
            raise StartupError(f"{path}: index format {payload.get('format')!r}, this service reads {FORMAT}")
        try:
            return cls(**body)
        except TypeError as exc:
            raise StartupError(f"{path}: unexpected fields ({exc})") from exc


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fsync_dir(directory: Path) -> None:
    """Make created, renamed or removed entries durable (POSIX needs the directory itself fsynced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_directory(directory: Path) -> int:
    """Hold the folder's flock so a second process cannot interleave its log records with ours."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(
            f"{directory}: index folder is open in another process (or another index object); "
            "stop it first or point --index / XRET_INDEX at another folder"
        ) from None
    return fd


def unlock_directory(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def read_manifest(directory: Path) -> Manifest | None:
    """The committed manifest, or None for a folder that holds no index yet (anything else refuses)."""
    path = directory / MANIFEST
    if not path.exists():
        stray = sorted(
            p.name
            for p in directory.iterdir()
            if p.name not in (LOCK_FILE, MANIFEST + ".tmp")
            and not p.name.startswith(_SNAPSHOT_PREFIX)
            and not (p.name == WAL_FILE and p.stat().st_size == 0)
        )
        if stray:
            raise StartupError(
                f"{directory}: not an xret index (no {MANIFEST}) but not empty either "
                f"({', '.join(stray[:5])}); point --index / XRET_INDEX at an index folder or an empty one"
            )
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StartupError(f"{path}: unreadable ({exc}); the index folder is damaged") from exc
    return Manifest.from_json(payload, path)


def verify_snapshot(directory: Path, manifest: Manifest) -> Path:
    """The snapshot folder, after checking every file against the sha256 the manifest recorded."""
    snap = directory / manifest.snapshot
    optional = [NEIGHBOURHOOD_FILE] if NEIGHBOURHOOD_FILE in manifest.files else []
    for name in (INDEX_FILE, SENTENCES_FILE, *optional):
        path = snap / name
        expected = manifest.files.get(name)
        if not path.is_file():
            raise StartupError(f"{path}: missing (the manifest lists it); the index folder is damaged")
        if expected is None or sha256_file(path) != expected:
            raise StartupError(
                f"{path}: sha256 does not match {MANIFEST} (file damaged); restore the index folder"
            )
    return snap


def write_snapshot(
    directory: Path,
    manifest: Manifest,
    write_index: Callable[[Path], None],
    rows: Sequence[Row | None],
    neighbourhood: np.ndarray | None,
) -> Manifest:
    """Write a new snapshot, commit it by replacing the manifest, then drop older snapshots.

    `neighbourhood` holds one float32 per row (the hubness-rescoring r; see service/hubness.py);
    `manifest.neighbour_k` says which k it was computed with. None (statistics off) writes no file.
    """
    if neighbourhood is not None and neighbourhood.shape != (len(rows),):
        raise ValueError(f"{len(rows)} rows but neighbourhood means of shape {neighbourhood.shape}")
    name = f"{_SNAPSHOT_PREFIX}{manifest.version:012d}-{secrets.token_hex(4)}"
    snap = directory / name
    written: tuple[str, ...] = (INDEX_FILE, SENTENCES_FILE)
    if neighbourhood is not None:
        written += (NEIGHBOURHOOD_FILE,)
    try:
        snap.mkdir()
        write_index(snap / INDEX_FILE)
        _write_sentences(snap / SENTENCES_FILE, rows)
        if neighbourhood is not None:
            with open(snap / NEIGHBOURHOOD_FILE, "wb") as handle:
                np.save(handle, np.ascontiguousarray(neighbourhood, dtype="<f4"), allow_pickle=False)
        for file in written:
            _fsync_file(snap / file)
        fsync_dir(snap)
        fsync_dir(directory)
        files = {file: sha256_file(snap / file) for file in written}
        committed = replace(manifest, snapshot=name, files=files, saved_at=time.time())
        write_json_atomic(directory / MANIFEST, committed.to_json())
        fsync_dir(directory)
    except (OSError, RuntimeError) as exc:  # RuntimeError: FAISS' own write errors
        shutil.rmtree(snap, ignore_errors=True)
        raise XretError(f"could not save an index snapshot in {directory}: {exc}") from exc
    remove_stale_snapshots(directory, keep=name)
    return committed


def remove_stale_snapshots(directory: Path, keep: str) -> None:
    """Delete snapshots the manifest no longer names: replaced ones and leftovers of crashed saves."""
    (directory / (MANIFEST + ".tmp")).unlink(missing_ok=True)
    for path in directory.iterdir():
        if path.name.startswith(_SNAPSHOT_PREFIX) and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def _write_sentences(path: Path, rows: Sequence[Row | None]) -> None:
    """JSONL, line i = internal id i; `null` keeps the place of a deleted row so ids stay aligned."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")


def read_sentences(path: Path) -> list[Row | None]:
    """Rows of a snapshot, checked for shape so a hand-edited file fails here, not at query time."""
    rows: list[Row | None] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise StartupError(f"{path}:{number}: not JSON ({exc})") from exc
            if item is None:
                rows.append(None)
                continue
            if (
                not isinstance(item, list)
                or len(item) != 4
                or not all(isinstance(v, str) for v in item[:3])
                or not (item[3] is None or isinstance(item[3], str))
            ):
                raise StartupError(f"{path}:{number}: expected [id, text, lang, metadata-json]")
            rows.append((item[0], item[1], item[2], item[3]))
    return rows


def read_neighbourhood(path: Path, rows: int) -> np.ndarray:
    """The stored neighbourhood means, checked (one finite float32 per row) so damage fails at start-up."""
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StartupError(f"{path}: not a readable .npy array ({exc}); the index folder is damaged") from exc
    if values.dtype != np.dtype("<f4") or values.shape != (rows,) or not np.isfinite(values).all():
        raise StartupError(
            f"{path}: expected {rows} finite float32 values, got {values.dtype} of shape {values.shape}; "
            "the index folder is damaged"
        )
    return np.asarray(values, dtype=np.float32)


def disk_bytes(directory: Path, manifest: Manifest) -> int:
    """Bytes the index occupies now: manifest, live snapshot and log."""
    paths = [directory / MANIFEST, directory / WAL_FILE]
    paths += [directory / manifest.snapshot / f for f in (INDEX_FILE, SENTENCES_FILE, NEIGHBOURHOOD_FILE)]
    return sum(p.stat().st_size for p in paths if p.exists())
