"""Record types shared by every task reader, so training code handles one shape per task family.

Records are frozen and hold tuples: a split can be cached, shuffled by index and shared between tasks
(UPOS and dependencies read the same EWT sentences) without one consumer mutating another's data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

UNK = "<unk>"

TaskKind = Literal["tagging", "parsing", "pair_regression", "pair_classification"]


@dataclass(frozen=True)
class TaggedSentence:
    """One label per word (POS, BIO chunk, CCG supertag); words are the treebank's tokens, untokenised."""

    words: tuple[str, ...]
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.words) != len(self.tags):
            raise ValueError(f"{len(self.words)} words but {len(self.tags)} tags")


@dataclass(frozen=True)
class ParsedSentence:
    """A dependency tree: heads are 1-based word indices, 0 is the root (CoNLL-U convention)."""

    words: tuple[str, ...]
    heads: tuple[int, ...]
    rels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not len(self.words) == len(self.heads) == len(self.rels):
            raise ValueError(f"{len(self.words)} words, {len(self.heads)} heads, {len(self.rels)} relations")


@dataclass(frozen=True)
class SentencePair:
    """Two sentences with a class label (NLI), a similarity score (STS), or both (SICK has both)."""

    a: str
    b: str
    label: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class LabelVocab:
    """Label <-> id mapping fixed from the training split, with an optional catch-all for unseen labels.

    Ids follow sorted label order (after the unknown label at 0) so the same data always gives the same ids,
    whatever order sentences were read in. Gold labels of dev/test that are missing here encode to the
    unknown id; scoring compares label strings, so such tokens always count as errors, never as free hits.
    """

    labels: tuple[str, ...]
    unk: str | None = UNK
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels in {self.labels}")
        if self.unk is not None and self.unk not in self.labels:
            raise ValueError(f"the unknown label {self.unk!r} is not among the labels")
        object.__setattr__(self, "_index", {label: i for i, label in enumerate(self.labels)})

    @classmethod
    def build(cls, labels: Iterable[str], min_count: int = 1, unk: str | None = UNK) -> LabelVocab:
        """Labels seen at least `min_count` times; with `unk=None` (classification) all must be kept."""
        counts = Counter(labels)
        kept = sorted(label for label, count in counts.items() if count >= min_count)
        if unk is None:
            if len(kept) != len(counts):
                raise ValueError("min_count drops labels but there is no unknown label to map them to")
            return cls(tuple(kept), None)
        return cls((unk, *(label for label in kept if label != unk)), unk)

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, label: str) -> int:
        """Id of `label`; unseen labels map to the unknown id, or raise when the vocabulary has none."""
        index = self._index.get(label)
        if index is not None:
            return index
        if self.unk is None:
            raise KeyError(f"label {label!r} is not in the vocabulary {self.labels}")
        return self._index[self.unk]

    def decode(self, index: int) -> str:
        return self.labels[index]


Record = TypeVar("Record", TaggedSentence, ParsedSentence, SentencePair)


@dataclass(frozen=True)
class TaskData(Generic[Record]):
    """The three splits of one intermediate task and its label vocabulary (None for regression)."""

    name: str
    kind: TaskKind
    train: list[Record]
    dev: list[Record]
    test: list[Record]
    labels: LabelVocab | None
    unit: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}

    def summary(self) -> str:
        """One line for training logs, so every run records exactly how much data it saw."""
        label_part = f", {len(self.labels)} labels" if self.labels is not None else ", regression"
        return (
            f"{self.name}: train {len(self.train)} / dev {len(self.dev)} / test {len(self.test)} "
            f"{self.unit}{label_part}"
        )
