"""TASKS: task name -> loader of its train/dev/test splits and label vocabulary.

Training and the pipeline look tasks up by the names used in configs and member.json (upos, xpos, deps,
chunk, ccg, sts, nli), so adding a task is one entry here. Vocabularies come from train only: dev/test
labels never leak into the model's output space.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.tasks.ccg import ccg_vocab, load_ccg
from export.tasks.chunking import load_conll2000
from export.tasks.conllu import UD_SPLITS, load_ud
from export.tasks.pairs import load_sick, load_stsb
from export.tasks.ptb import load_ptb_sample
from export.tasks.types import (
    LabelVocab,
    ParsedSentence,
    Record,
    SentencePair,
    TaggedSentence,
    TaskData,
    TaskKind,
)

DataDir = str | Path | None


def load_upos(data_dir: DataDir = None) -> TaskData[TaggedSentence]:
    """UD English EWT, universal POS (17 tags)."""
    splits = {split: [s.tagged("upos") for s in load_ud(split, data_dir=data_dir)] for split in UD_SPLITS}
    return _tagging("upos", splits)


def load_xpos(data_dir: DataDir = None) -> TaskData[TaggedSentence]:
    """PTB WSJ sample, gold Penn POS tags, traces removed (a second, finer-grained POS view)."""
    return _tagging("xpos", load_ptb_sample(data_dir))


def load_deps(data_dir: DataDir = None) -> TaskData[ParsedSentence]:
    """UD English EWT basic trees; relations keep their subtypes (e.g. nmod:poss)."""
    splits = {split: [s.parsed() for s in load_ud(split, data_dir=data_dir)] for split in UD_SPLITS}
    vocab = LabelVocab.build(rel for sentence in splits["train"] for rel in sentence.rels)
    return _task("deps", "parsing", splits, vocab, "sentences")


def load_chunk(data_dir: DataDir = None) -> TaskData[TaggedSentence]:
    """CoNLL-2000 BIO chunks; dev is the tail of train.txt (see chunking.py)."""
    return _tagging("chunk", load_conll2000(data_dir))


def load_ccg_task(data_dir: DataDir = None) -> TaskData[TaggedSentence]:
    """Small gold CCG sets; rare supertags -> <unk> (see ccg.py)."""
    splits = load_ccg(data_dir)
    return _task("ccg", "tagging", splits, ccg_vocab(splits["train"]), "sentences")


def load_sts(data_dir: DataDir = None) -> TaskData[SentencePair]:
    """English STS-B regression, scores 0-5."""
    return _task("sts", "pair_regression", load_stsb(data_dir), None, "pairs")


def load_nli(data_dir: DataDir = None) -> TaskData[SentencePair]:
    """SICK 3-way entailment (pairs also carry relatedness as `score`)."""
    splits = load_sick(data_dir)
    vocab = LabelVocab.build((str(pair.label) for pair in splits["train"]), unk=None)
    return _task("nli", "pair_classification", splits, vocab, "pairs")


TASKS: dict[str, Callable[[DataDir], TaskData[Any]]] = {
    "upos": load_upos,
    "xpos": load_xpos,
    "deps": load_deps,
    "chunk": load_chunk,
    "ccg": load_ccg_task,
    "sts": load_sts,
    "nli": load_nli,
}


def load_task(name: str, data_dir: DataDir = None) -> TaskData[Any]:
    """The named task's data; an unknown name lists the known ones."""
    loader = TASKS.get(name)
    if loader is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return loader(data_dir)


def _tagging(name: str, splits: dict[str, list[TaggedSentence]]) -> TaskData[TaggedSentence]:
    vocab = LabelVocab.build(tag for sentence in splits["train"] for tag in sentence.tags)
    return _task(name, "tagging", splits, vocab, "sentences")


def _task(
    name: str, kind: TaskKind, splits: dict[str, list[Record]], labels: LabelVocab | None, unit: str
) -> TaskData[Record]:
    empty = [split for split in ("train", "dev", "test") if not splits.get(split)]
    if empty:
        raise ValueError(f"task {name}: split(s) {empty} are empty; check the data files")
    return TaskData(name, kind, splits["train"], splits["dev"], splits["test"], labels, unit)
