"""BUCC 2018 bitext mining, zh-en, SAMPLE split only (XTREME calls it `dev`; nothing else is available).

The task: from 8,624 Chinese and 13,589 English sentences, find the 257 translation pairs. Mining
follows LASER's `mine_bitexts.py` as XTREME runs it (retrieval "max"): every sentence on either side
proposes its best partner among its k=4 nearest neighbours, all proposals are ranked by score, and a
greedy pass keeps a pair only when neither sentence is already used. Scores are either the ratio
margin (Artetxe & Schwenk 2019) or plain cosine. As in XTREME, identical sentences are embedded and
mined once and a mined text pair stands for every id pair carrying those texts.

The threshold that turns the ranked candidates into an extracted set is the only thing fitted on
gold. Both numbers are reported: k-fold cross-validated (folds over Chinese sentences) and the oracle
threshold (tuned on the very gold it is scored on, hence optimistic).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.retrieval.errors import BenchmarkError
from benchmarks.retrieval.metrics import assign_folds, cross_validated_f1, oracle_threshold, ratio_margin
from benchmarks.retrieval.neighbours import knn
from benchmarks.retrieval.textfile import read_lines

Scoring = Literal["ratio_margin", "cosine"]
SCORINGS: tuple[Scoring, ...] = ("ratio_margin", "cosine")
SPLIT_LABEL = "BUCC 2018 zh-en SAMPLE split (XTREME 'dev'); not the BUCC test set"


@dataclass
class Side:
    """One language's sentences in file order, and each distinct text with the ids that carry it."""

    lang: str
    ids: list[str]
    texts: list[str]
    unique_texts: list[str] = field(init=False)
    ids_of_unique: list[list[str]] = field(init=False)

    def __post_init__(self) -> None:
        position: dict[str, int] = {}
        self.unique_texts, self.ids_of_unique = [], []
        for sid, text in zip(self.ids, self.texts, strict=True):
            if text not in position:
                position[text] = len(self.unique_texts)
                self.unique_texts.append(text)
                self.ids_of_unique.append([])
            self.ids_of_unique[position[text]].append(sid)


@dataclass
class BuccCorpus:
    """Source side (xx), target side (en) and the gold (xx id, en id) pairs."""

    src: Side
    tgt: Side
    gold: list[tuple[str, str]]


def _read_side(path: Path, lang: str) -> Side:
    id_re = re.compile(rf"^{re.escape(lang)}-\d{{9}}$")
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(read_lines(path), start=1):
        sid, tab, text = line.partition("\t")
        if not tab or not id_re.match(sid) or not text.strip():
            raise BenchmarkError(f"{path}:{number}: expected '{lang}-<9 digits><TAB>sentence', got {line[:80]!r}")
        if sid in seen:
            raise BenchmarkError(f"{path}:{number}: duplicate id {sid}")
        seen.add(sid)
        ids.append(sid)
        texts.append(text.strip())
    return Side(lang=lang, ids=ids, texts=texts)


def load_bucc(data_dir: Path, pair: str = "zh-en") -> BuccCorpus:
    """Read and check the sample split of one pair (`bucc2018/<pair>.dev.{xx,en,gold}`)."""
    src_lang, _, tgt_lang = pair.partition("-")
    base = Path(data_dir) / "bucc2018"
    src = _read_side(base / f"{pair}.dev.{src_lang}", src_lang)
    tgt = _read_side(base / f"{pair}.dev.{tgt_lang}", tgt_lang)
    known_src, known_tgt = set(src.ids), set(tgt.ids)
    gold_path = base / f"{pair}.dev.gold"
    gold: list[tuple[str, str]] = []
    for number, line in enumerate(read_lines(gold_path), start=1):
        cells = line.split("\t")
        if len(cells) != 2 or cells[0] not in known_src or cells[1] not in known_tgt:
            raise BenchmarkError(f"{gold_path}:{number}: expected two known ids '<{pair} ids>', got {line[:80]!r}")
        gold.append((cells[0], cells[1]))
    return BuccCorpus(src=src, tgt=tgt, gold=gold)


def cap_corpus(corpus: BuccCorpus, max_sentences: int) -> BuccCorpus:
    """At most `max_sentences` per side for smoke runs (scores not comparable to the full sample).

    The first gold pairs (up to the cap) are kept whole, then each side is filled with its other
    sentences in file order, so a small run still has translations to find among distractors.
    """
    gold = corpus.gold[: max_sentences // 2]

    def cap(side: Side, gold_ids: set[str]) -> Side:
        rest = [i for i, sid in enumerate(side.ids) if sid not in gold_ids][: max_sentences - len(gold_ids)]
        rows = sorted([i for i, sid in enumerate(side.ids) if sid in gold_ids] + rest)
        return Side(side.lang, [side.ids[i] for i in rows], [side.texts[i] for i in rows])

    src = cap(corpus.src, {s for s, _ in gold})
    tgt = cap(corpus.tgt, {t for _, t in gold})
    return BuccCorpus(src=src, tgt=tgt, gold=gold)


@dataclass
class Mined:
    """Mined pairs as row indices into the two embedded matrices, with their scores."""

    src: np.ndarray
    tgt: np.ndarray
    score: np.ndarray


def mine(x: np.ndarray, y: np.ndarray, scoring: Scoring, k: int = 4) -> Mined:
    """LASER's mining, retrieval 'max': best-of-k proposals from both sides, greedy one-to-one."""
    kx, ky = min(k, y.shape[0]), min(k, x.shape[0])
    x2y_cos, x2y_ind = knn(x, y, kx)
    y2x_cos, y2x_ind = knn(y, x, ky)
    if scoring == "ratio_margin":
        x_density, y_density = x2y_cos.mean(axis=1), y2x_cos.mean(axis=1)
        fwd = ratio_margin(x2y_cos, x_density[:, None], y_density[x2y_ind])
        bwd = ratio_margin(y2x_cos, y_density[:, None], x_density[y2x_ind])
    elif scoring == "cosine":
        fwd, bwd = x2y_cos.astype(np.float64), y2x_cos.astype(np.float64)
    else:
        raise BenchmarkError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
    fwd_arg, bwd_arg = fwd.argmax(axis=1), bwd.argmax(axis=1)
    src = np.concatenate([np.arange(x.shape[0]), y2x_ind[np.arange(y.shape[0]), bwd_arg]])
    tgt = np.concatenate([x2y_ind[np.arange(x.shape[0]), fwd_arg], np.arange(y.shape[0])])
    score = np.concatenate([fwd.max(axis=1), bwd.max(axis=1)])
    used_src: set[int] = set()
    used_tgt: set[int] = set()
    keep: list[int] = []
    for i in np.argsort(-score, kind="stable"):
        s, t = int(src[i]), int(tgt[i])
        if s not in used_src and t not in used_tgt:
            used_src.add(s)
            used_tgt.add(t)
            keep.append(int(i))
    rows = np.asarray(keep, dtype=np.int64)
    return Mined(src=src[rows], tgt=tgt[rows], score=score[rows])


def candidates_by_id(corpus: BuccCorpus, mined: Mined) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Mined text pairs (rows of the unique-text matrices) expanded to every id pair carrying them."""
    pairs: list[tuple[str, str]] = []
    scores: list[float] = []
    for s, t, score in zip(mined.src, mined.tgt, mined.score, strict=True):
        for sid in corpus.src.ids_of_unique[int(s)]:
            for tid in corpus.tgt.ids_of_unique[int(t)]:
                pairs.append((sid, tid))
                scores.append(float(score))
    return pairs, np.asarray(scores, dtype=np.float64)


def score_mining(
    corpus: BuccCorpus, pairs: Sequence[tuple[str, str]], scores: np.ndarray, n_folds: int, seed: int = 0
) -> dict[str, Any]:
    """Cross-validated and oracle F1 of ranked candidate pairs against the gold."""
    gold = set(corpus.gold)
    correct = np.asarray([p in gold for p in pairs], dtype=bool)
    src_fold = dict(zip(corpus.src.ids, assign_folds(len(corpus.src.ids), n_folds, seed).tolist(), strict=True))
    candidate_fold = np.asarray([src_fold[s] for s, _ in pairs], dtype=np.int64)
    gold_fold = np.asarray([src_fold[s] for s, _ in corpus.gold], dtype=np.int64)
    cv = cross_validated_f1(scores, correct, candidate_fold, gold_fold, n_folds)
    oracle = oracle_threshold(scores, correct, len(corpus.gold))
    return {
        "cv": {"folds": n_folds, "seed": seed, **cv.to_json()},
        "oracle": {"note": "threshold tuned on the same gold it is scored on (optimistic)", **oracle.to_json()},
        "n_candidates": len(pairs),
        "gold_among_candidates": int(correct.sum()),
    }
