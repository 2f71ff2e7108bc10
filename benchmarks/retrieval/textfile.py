"""Reading the shared data files line by line, with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

from benchmarks.retrieval.errors import BenchmarkError


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file split on LF only.

    `str.splitlines` would also split on U+2028, U+0085 and friends, which occur inside sentences of
    these corpora and would silently shift every later line out of alignment with its translation.
    """
    if not path.is_file():
        raise BenchmarkError(f"{path}: file missing")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: not UTF-8 ({exc})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]
