"""Universal Dependencies CoNLL-U reader (UD English EWT feeds both the `upos` and the `deps` tasks).

Only syntactic words are kept: multiword-token ranges ("1-2 don't") carry no tags or heads, and empty
nodes ("8.1") belong to enhanced dependencies, which the basic tree that UAS/LAS score does not use.
Every row is checked because a silently shifted column would train a parser on garbage that still
"learns" something.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from export.tasks.files import DataFormatError, iter_lines, require_file, resolve_data_dir
from export.tasks.types import ParsedSentence, TaggedSentence

UD_FOLDER = "ud_english"
UD_SPLITS = ("train", "dev", "test")

_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_NODE_ID = re.compile(r"[0-9]+\.[1-9][0-9]*")
_HEAD = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class ConlluSentence:
    """The basic-tree view of one CoNLL-U sentence; `comments` keeps every '#' line in order."""

    comments: tuple[str, ...]
    words: tuple[str, ...]
    upos: tuple[str, ...]
    xpos: tuple[str, ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]

    @property
    def sent_id(self) -> str | None:
        return self._comment_value("sent_id")

    @property
    def text(self) -> str | None:
        return self._comment_value("text")

    def tagged(self, column: Literal["upos", "xpos"]) -> TaggedSentence:
        return TaggedSentence(self.words, self.upos if column == "upos" else self.xpos)

    def parsed(self) -> ParsedSentence:
        return ParsedSentence(self.words, self.heads, self.deprels)

    def _comment_value(self, key: str) -> str | None:
        for comment in self.comments:
            name, sep, value = comment.partition("=")
            if sep and name.strip() == key:
                return value.strip()
        return None


def read_conllu(path: Path) -> list[ConlluSentence]:
    """All sentences of a .conllu or .conllu.gz file; raises DataFormatError at the first bad line."""
    sentences: list[ConlluSentence] = []
    comments: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    last_line = 0
    for number, line in iter_lines(path):
        last_line = number
        if not line.strip():
            if rows:
                sentences.append(_build_sentence(path, comments, rows))
            elif comments:
                raise DataFormatError(path, number, "sentence has comment lines but no word lines")
            comments, rows = [], []
        elif line.startswith("#"):
            if rows:
                raise DataFormatError(path, number, "comment line after the word lines of a sentence")
            comments.append(line[1:].strip())
        else:
            row = _parse_row(path, number, line, expected_id=len(rows) + 1)
            if row is not None:
                rows.append((number, row))
    if rows:
        sentences.append(_build_sentence(path, comments, rows))
    elif comments:
        raise DataFormatError(path, last_line, "file ends with comment lines but no word lines")
    return sentences


def load_ud(split: str, treebank: str = "ewt", data_dir: str | Path | None = None) -> list[ConlluSentence]:
    """One split of an English UD treebank from `<data_dir>/ud_english/en_<treebank>-ud-<split>.conllu.gz`."""
    if split not in UD_SPLITS:
        raise ValueError(f"unknown UD split {split!r}; expected one of {UD_SPLITS}")
    path = resolve_data_dir(data_dir) / UD_FOLDER / f"en_{treebank}-ud-{split}.conllu.gz"
    return read_conllu(require_file(path, UD_FOLDER))


def _parse_row(path: Path, number: int, line: str, expected_id: int) -> list[str] | None:
    """The 10 columns of a syntactic word, or None for the range and empty-node lines we skip."""
    columns = line.split("\t")
    if len(columns) != 10:
        raise DataFormatError(path, number, f"expected 10 tab-separated columns, got {len(columns)}")
    word_id = columns[0]
    if not _WORD_ID.fullmatch(word_id):
        if _RANGE_ID.fullmatch(word_id) or _EMPTY_NODE_ID.fullmatch(word_id):
            return None
        raise DataFormatError(path, number, f"ID {word_id!r} is not an integer, a range 'a-b' or a node 'a.b'")
    if int(word_id) != expected_id:
        raise DataFormatError(path, number, f"word ID {word_id} out of sequence, expected {expected_id}")
    if not columns[1]:
        raise DataFormatError(path, number, "empty FORM column")
    if not _HEAD.fullmatch(columns[6]):
        raise DataFormatError(path, number, f"HEAD {columns[6]!r} is not a non-negative integer")
    if columns[7] in ("", "_"):
        raise DataFormatError(path, number, f"missing DEPREL ({columns[7]!r})")
    return columns


def _build_sentence(path: Path, comments: list[str], rows: list[tuple[int, list[str]]]) -> ConlluSentence:
    """Check the tree-level constraints a row alone cannot show: heads in range, no self-loop, one root."""
    heads = tuple(int(columns[6]) for _, columns in rows)
    for word, (head, (number, _)) in enumerate(zip(heads, rows, strict=True), start=1):
        if head > len(rows):
            raise DataFormatError(path, number, f"HEAD {head} points past the last word ({len(rows)})")
        if head == word:
            raise DataFormatError(path, number, f"word {head} is its own head")
    roots = heads.count(0)
    if roots != 1:
        raise DataFormatError(path, rows[0][0], f"sentence has {roots} root words, expected exactly 1")
    return ConlluSentence(
        comments=tuple(comments),
        words=tuple(columns[1] for _, columns in rows),
        upos=tuple(columns[3] for _, columns in rows),
        xpos=tuple(columns[4] for _, columns in rows),
        heads=heads,
        deprels=tuple(columns[7] for _, columns in rows),
    )
