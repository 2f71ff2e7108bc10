"""Locating and opening the shared data files, and the two errors every reader raises.

Training runs for many minutes before it touches the test split, so a typo in the data folder or one bad
line must fail at load time with the exact file (and line) to fix, not as a KeyError deep in a batch.
Everything here is standard library only, so readers stay importable without torch.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

DATA_DIR_ENV = "XRET_DATA_DIR"
DEFAULT_DATA_DIR = Path("../shared/data")


class DataFormatError(ValueError):
    """A data file does not have the format its reader expects; `source` and `line` say where."""

    def __init__(self, source: str | Path, line: int | None, problem: str) -> None:
        where = f"{source}:{line}" if line is not None else str(source)
        super().__init__(f"{where}: {problem}")
        self.source = str(source)
        self.line = line
        self.problem = problem


class MissingDataError(FileNotFoundError):
    """A data file is absent; the message names the path and the shared-data folder meant to hold it."""

    def __init__(self, path: str | Path, folder: str) -> None:
        super().__init__(
            f"missing data file {path}: it belongs in the '{folder}/' folder of the shared data directory "
            f"(see {folder}/SOURCE.md there; set {DATA_DIR_ENV} if the data lives elsewhere)"
        )
        self.path = str(path)
        self.folder = folder


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """An explicit folder wins; otherwise `XRET_DATA_DIR`, otherwise `../shared/data` from the current dir."""
    if data_dir is not None:
        return Path(data_dir)
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else DEFAULT_DATA_DIR


def require_file(path: Path, folder: str) -> Path:
    """Fail with a message naming the data folder before any parsing starts."""
    if not path.is_file():
        raise MissingDataError(path, folder)
    return path


def open_text(path: Path, newline: str | None = None) -> io.TextIOBase:
    """UTF-8 text of a plain or gzip-compressed file (the shared data stores both); universal newlines
    by default (SICK's test file is CRLF), `newline=""` for the csv module."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline=newline)
    return open(path, encoding="utf-8", newline=newline)


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end-of-line) for every line of a plain or .gz file."""
    number = 0
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\r\n")
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise DataFormatError(path, number + 1, f"unreadable text at or after this line ({exc})") from exc


def read_zip_member(zip_path: Path, member: str, folder: str) -> str:
    """Text of one member of a zip package, read in place (the shared data is never unpacked)."""
    members = read_zip_members(zip_path, member, "", folder)
    if member not in members:
        raise MissingDataError(f"{zip_path}:{member}", folder)
    return members[member]


def read_zip_members(zip_path: Path, prefix: str, suffix: str, folder: str) -> dict[str, str]:
    """UTF-8 text of every member under `prefix` ending in `suffix`, keyed by member name in sorted order
    (sorted so that splits by file id are deterministic whatever order the zip stores them in)."""
    require_file(zip_path, folder)
    texts: dict[str, str] = {}
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for name in sorted(archive.namelist()):
                if name.startswith(prefix) and name.endswith(suffix) and not name.endswith("/"):
                    texts[name] = _decode(archive.read(name), f"{zip_path}:{name}")
    except zipfile.BadZipFile as exc:
        raise DataFormatError(zip_path, None, f"not a readable zip file ({exc})") from exc
    return texts


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(source, None, f"not UTF-8 text ({exc})") from exc
