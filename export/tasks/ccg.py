"""CCG supertagging on the small public gold sets (Rimell & Clark questions + GENIA), C&C "stagged" format.

Splits: test is qus_test (500 questions). Train is qus_train (1,328) + GENIA1000 (1,000), and dev is
the last tenth of *each* of those two files (132 questions + 100 GENIA sentences), so dev mixes both
domains in the same proportion as train and, being a contiguous tail, shares no GENIA abstract with it.
What stays in train: 1,196 questions + 900 GENIA sentences.

Rare-tag policy: the vocabulary holds the supertags seen at least `RARE_TAG_MIN_COUNT` (2) times in the
train split, plus `<unk>` (id 0): a category seen once cannot be learned from one example, and a softmax
slot per singleton only adds noise to a ~2k-sentence task. Such tokens train as `<unk>`; at scoring time
any gold tag outside the vocabulary counts as an error (see LabelVocab). The default vocabulary has 161
supertags + `<unk>` and covers 99.1% of test tokens.
"""

from __future__ import annotations

from pathlib import Path

from export.tasks.files import DataFormatError, iter_lines, require_file, resolve_data_dir
from export.tasks.types import LabelVocab, TaggedSentence

CCG_FOLDER = "ccg_supertags"
TRAIN_FILES = ("qus_train.staggedGold", "GENIA1000.staggedgold")
TEST_FILE = "qus_test.staggedGold"
DEV_DIVISOR = 10
RARE_TAG_MIN_COUNT = 2


def read_stagged(path: Path) -> list[TaggedSentence]:
    """One sentence per line of `word|POS|supertag` tokens; split on the last two '|' (words may hold '|')."""
    sentences: list[TaggedSentence] = []
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        words: list[str] = []
        tags: list[str] = []
        for position, token in enumerate(line.split(" "), start=1):
            parts = token.rsplit("|", 2)
            if len(parts) != 3 or not all(parts):
                raise DataFormatError(
                    path, number, f"token {position} {token!r} is not 'word|POS|supertag' (needs two '|')"
                )
            words.append(parts[0])
            tags.append(parts[2])
        sentences.append(TaggedSentence(tuple(words), tuple(tags)))
    return sentences


def load_ccg(data_dir: str | Path | None = None) -> dict[str, list[TaggedSentence]]:
    """{"train", "dev", "test"} as described in the module docstring."""
    folder = resolve_data_dir(data_dir) / CCG_FOLDER
    train: list[TaggedSentence] = []
    dev: list[TaggedSentence] = []
    for name in TRAIN_FILES:
        sentences = read_stagged(require_file(folder / name, CCG_FOLDER))
        cut = len(sentences) - len(sentences) // DEV_DIVISOR
        train.extend(sentences[:cut])
        dev.extend(sentences[cut:])
    test = read_stagged(require_file(folder / TEST_FILE, CCG_FOLDER))
    return {"train": train, "dev": dev, "test": test}


def ccg_vocab(train: list[TaggedSentence], min_count: int = RARE_TAG_MIN_COUNT) -> LabelVocab:
    """Supertags frequent enough in train to be learnable, plus `<unk>` for the rest."""
    return LabelVocab.build((tag for sentence in train for tag in sentence.tags), min_count=min_count)
