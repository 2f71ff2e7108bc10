"""CoNLL-2000 chunking (WSJ sections 15-18 train, 20 test), read straight from NLTK's conll2000.zip.

The shared task has no dev split, so dev is carved from train deterministically: the last
`DEV_SENTENCES` (1,000) sentences of train.txt are dev, the first 7,936 stay train. A contiguous tail
rather than every n-th sentence, because train.txt is in article order: striding would put sentences of
the same article in both sides and flatter early stopping.

Rows are `word POS chunk`; the gold POS column must be present but is dropped, because the intermediate task
must predict chunks from words alone. Words are PTB-escaped (`-LRB-`, `3\\/4`) and are unescaped to raw text
as in `ptb.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

from export.tasks.files import DataFormatError, read_zip_member, resolve_data_dir
from export.tasks.ptb import unescape_ptb_word
from export.tasks.types import TaggedSentence

NLTK_FOLDER = "nltk_data"
CONLL2000_ZIP = Path("corpora") / "conll2000.zip"
DEV_SENTENCES = 1000

_CHUNK_TAG = re.compile(r"O|[BI]-[A-Z]+")


def parse_conll2000(text: str, source: str) -> list[TaggedSentence]:
    """Sentences of one CoNLL-2000 file; blank lines separate sentences, `source` names it in errors."""
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if words:
                sentences.append(TaggedSentence(tuple(words), tuple(tags)))
            words, tags = [], []
            continue
        columns = line.split(" ")
        if len(columns) != 3 or not all(columns):
            raise DataFormatError(source, number, f"expected 'word POS chunk' (3 columns), got {len(columns)}")
        if not _CHUNK_TAG.fullmatch(columns[2]):
            raise DataFormatError(source, number, f"chunk tag {columns[2]!r} is not O, B-TYPE or I-TYPE")
        words.append(unescape_ptb_word(columns[0]))
        tags.append(columns[2])
    if words:
        sentences.append(TaggedSentence(tuple(words), tuple(tags)))
    return sentences


def load_conll2000(data_dir: str | Path | None = None) -> dict[str, list[TaggedSentence]]:
    """{"train": first 7,936 of train.txt, "dev": its last 1,000, "test": test.txt (2,012)}."""
    zip_path = resolve_data_dir(data_dir) / NLTK_FOLDER / CONLL2000_ZIP
    files = {}
    for name in ("train", "test"):
        member = f"conll2000/{name}.txt"
        files[name] = parse_conll2000(read_zip_member(zip_path, member, NLTK_FOLDER), f"{zip_path}:{member}")
    train = files["train"]
    if len(train) <= DEV_SENTENCES:
        raise DataFormatError(
            f"{zip_path}:conll2000/train.txt", None, f"only {len(train)} sentences, too few to carve dev"
        )
    return {"train": train[:-DEV_SENTENCES], "dev": train[-DEV_SENTENCES:], "test": files["test"]}
