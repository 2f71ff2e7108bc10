"""Penn Treebank WSJ sample (NLTK's treebank.zip, wsj_0001-wsj_0199): words + gold PTB POS (the `xpos` task).

Read from the bracketed `combined/*.mrg` trees rather than the `.pos` files: a tree is unambiguously one
sentence, while the .pos files only mark sentences by blank lines around chunk brackets. Preterminals
tagged `-NONE-` (traces, null elements) are dropped: they are not words of the text the encoder sees.

Split by file id, so no article is on two sides: wsj_0001-0141 train, wsj_0142-0171 dev,
wsj_0172-0199 test. The cut points give about 80/10/10 of the *sentences* (3,098 / 420 / 396); files vary
a lot in length, so an 80/10/10 cut by file count would leave dev and test with ~250 sentences each.

Words are PTB-escaped in the files (`-LRB-`, `1\\/2`); `unescape_ptb_word` restores the raw text, since
the encoder is a retrieval model fed ordinary text. Tags keep PTB spelling (`-LRB-`).
"""

from __future__ import annotations

import re
from pathlib import Path

from export.tasks.files import DataFormatError, read_zip_members, resolve_data_dir
from export.tasks.types import TaggedSentence

NLTK_FOLDER = "nltk_data"
TREEBANK_ZIP = Path("corpora") / "treebank.zip"
TRACE_TAG = "-NONE-"
DEV_FIRST_FILE = 142
TEST_FIRST_FILE = 172

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_FILE_ID = re.compile(r"wsj_([0-9]{4})\.mrg")
_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}", "-LSB-": "[", "-RSB-": "]"}


def unescape_ptb_word(word: str) -> str:
    """Raw text of a PTB token: bracket names back to brackets, `\\/` and `\\*` back to `/` and `*`."""
    return _BRACKETS.get(word, word.replace("\\/", "/").replace("\\*", "*"))


class _Node:
    """A bracket being read: its label, the (tag, word) leaves under it, and where it opened."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.label: str | None = None
        self.leaves: list[tuple[str, str]] = []
        self.word: str | None = None
        self.has_subtrees = False


def parse_mrg(text: str, source: str) -> list[TaggedSentence]:
    """One TaggedSentence per top-level tree of a .mrg file, traces removed."""
    sentences: list[TaggedSentence] = []
    stack: list[_Node] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for token in _TOKEN.findall(line):
            if token == "(":
                if stack:
                    stack[-1].has_subtrees = True
                stack.append(_Node(number))
            elif token == ")":
                if not stack:
                    raise DataFormatError(source, number, "')' closes a bracket that was never opened")
                leaves = _close(stack.pop(), source, number)
                if stack:
                    stack[-1].leaves.extend(leaves)
                else:
                    sentences.append(_sentence(leaves, source, number))
            else:
                _add_atom(stack, token, source, number)
    if stack:
        raise DataFormatError(source, stack[0].line, "'(' opened here is never closed")
    return sentences


def load_ptb_sample(data_dir: str | Path | None = None) -> dict[str, list[TaggedSentence]]:
    """{"train", "dev", "test"} split by WSJ file id (see the module docstring), words with gold XPOS."""
    zip_path = resolve_data_dir(data_dir) / NLTK_FOLDER / TREEBANK_ZIP
    splits: dict[str, list[TaggedSentence]] = {"train": [], "dev": [], "test": []}
    members = read_zip_members(zip_path, "treebank/combined/", ".mrg", NLTK_FOLDER)
    if not members:
        raise DataFormatError(zip_path, None, "no treebank/combined/*.mrg files inside")
    for member, text in members.items():
        source = f"{zip_path}:{member}"
        match = _FILE_ID.fullmatch(member.rsplit("/", 1)[-1])
        if match is None:
            raise DataFormatError(source, None, "file name is not wsj_NNNN.mrg, so it has no split")
        file_id = int(match.group(1))
        split = "test" if file_id >= TEST_FIRST_FILE else "dev" if file_id >= DEV_FIRST_FILE else "train"
        splits[split].extend(parse_mrg(text, source))
    return splits


def _add_atom(stack: list[_Node], atom: str, source: str, number: int) -> None:
    """The first atom after '(' is the label; a second one is the word of a preterminal."""
    if not stack:
        raise DataFormatError(source, number, f"{atom!r} outside any bracket")
    node = stack[-1]
    if node.label is None and not node.has_subtrees:
        node.label = atom
    elif node.word is None and not node.has_subtrees:
        node.word = atom
    else:
        raise DataFormatError(source, number, f"unexpected {atom!r}: a bracket holds one word or subtrees")


def _close(node: _Node, source: str, number: int) -> list[tuple[str, str]]:
    if node.word is None:
        if not node.has_subtrees:
            raise DataFormatError(source, number, f"empty bracket ({node.label or ''}) opened at line {node.line}")
        return node.leaves
    if node.has_subtrees:
        raise DataFormatError(source, number, "a bracket holds both a word and subtrees")
    return [] if node.label == TRACE_TAG else [(str(node.label), node.word)]


def _sentence(leaves: list[tuple[str, str]], source: str, number: int) -> TaggedSentence:
    if not leaves:
        raise DataFormatError(source, number, "tree has no words besides traces")
    return TaggedSentence(tuple(unescape_ptb_word(word) for _, word in leaves), tuple(tag for tag, _ in leaves))
