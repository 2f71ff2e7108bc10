"""Scores the study reports: retrieval P@1, tag accuracy, chunk span F1 (conlleval) and UAS/LAS.

Pure numpy so the same numbers come out of training, the pipeline and the benchmarks. Inputs are
validated loudly: a metric silently computed on misaligned or unnormalised inputs is worse than none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import numpy as np

Item = TypeVar("Item")

_BLOCK_ROWS = 2048
_NORM_TOLERANCE = 1e-3


def p_at_1(src: np.ndarray, tgt: np.ndarray) -> float:
    """Fraction of source vectors whose nearest target (cosine) is their own translation, tgt[i] for src[i].

    A hit needs the gold score to be strictly above every other target's: with ties, a collapsed encoder
    that maps everything to one vector would otherwise get hits for free. Rows must be unit vectors
    (cosine = dot product); unnormalised input raises instead of giving a wrong number.
    """
    src = np.asarray(src, dtype=np.float32)
    tgt = np.asarray(tgt, dtype=np.float32)
    if src.ndim != 2 or src.shape != tgt.shape or src.shape[0] == 0:
        raise ValueError(f"src and tgt must be non-empty [n, dim] arrays of one shape, got {src.shape} and {tgt.shape}")
    for name, matrix in (("src", src), ("tgt", tgt)):
        norms = np.linalg.norm(matrix, axis=1)
        if not np.all(np.abs(norms - 1.0) <= _NORM_TOLERANCE):
            raise ValueError(f"{name} rows must be unit vectors (norms range {norms.min():.4g}..{norms.max():.4g})")
    hits = 0
    for start in range(0, src.shape[0], _BLOCK_ROWS):
        rows = np.arange(start, min(start + _BLOCK_ROWS, src.shape[0]))
        scores = src[rows] @ tgt.T
        gold = scores[np.arange(len(rows)), rows].copy()
        scores[np.arange(len(rows)), rows] = -np.inf
        hits += int(np.sum(gold > scores.max(axis=1)))
    return hits / src.shape[0]


def tag_accuracy(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Token accuracy over all sentences (UPOS, XPOS, CCG); compares label strings, so `<unk>` never hits."""
    correct = total = 0
    for index, (gold_tags, pred_tags) in enumerate(_paired(gold, pred, "tag")):
        _same_length(index, gold_tags, pred_tags)
        correct += sum(g == p for g, p in zip(gold_tags, pred_tags, strict=True))
        total += len(gold_tags)
    if total == 0:
        raise ValueError("no tokens to score")
    return correct / total


class SpanScores(NamedTuple):
    precision: float
    recall: float
    f1: float
    gold: int
    predicted: int
    correct: int


def chunk_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, start, end-exclusive) chunks of one sentence, by conlleval's start/end-of-chunk rules.

    As in conlleval, an I- tag that follows O or a chunk of another type opens a new chunk (IOB1 style),
    and a type change inside a chunk closes it. B/I/E/S prefixes are understood; any tag that is not
    `X-TYPE` with X in B, I, E, S (O, `<unk>`, ...) is outside every chunk.
    """
    spans: list[tuple[str, int, int]] = []
    start: int | None = None
    prev_prefix, prev_type = "O", ""
    for position, raw in enumerate([*tags, "O"]):
        prefix, chunk_type = _split_tag(raw)
        if start is not None and _chunk_ends(prev_prefix, prefix, prev_type, chunk_type):
            spans.append((prev_type, start, position))
            start = None
        if _chunk_starts(prev_prefix, prefix, prev_type, chunk_type):
            start = position
        prev_prefix, prev_type = prefix, chunk_type
    return spans


def span_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> SpanScores:
    """Corpus-level chunk precision/recall/F1 (fractions, not conlleval's percentages): exact span + type."""
    gold_spans: set[tuple[int, str, int, int]] = set()
    pred_spans: set[tuple[int, str, int, int]] = set()
    for index, (gold_tags, pred_tags) in enumerate(_paired(gold, pred, "tag")):
        _same_length(index, gold_tags, pred_tags)
        gold_spans.update((index, *span) for span in chunk_spans(gold_tags))
        pred_spans.update((index, *span) for span in chunk_spans(pred_tags))
    correct = len(gold_spans & pred_spans)
    precision = correct / len(pred_spans) if pred_spans else 0.0
    recall = correct / len(gold_spans) if gold_spans else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return SpanScores(precision, recall, f1, len(gold_spans), len(pred_spans), correct)


def attachment_scores(
    gold_heads: Sequence[Sequence[int]],
    gold_rels: Sequence[Sequence[str]],
    pred_heads: Sequence[Sequence[int]],
    pred_rels: Sequence[Sequence[str]],
) -> tuple[float, float]:
    """(UAS, LAS) over all words, punctuation included (as the CoNLL 2018 UD evaluation does).

    LAS compares relation strings exactly; pass universal relations (before ':') for UD-style LAS.
    """
    heads = _paired(gold_heads, pred_heads, "head")
    rels = _paired(gold_rels, pred_rels, "relation")
    if len(heads) != len(rels):
        raise ValueError(f"{len(heads)} sentences of heads but {len(rels)} of relations")
    attached = labelled = total = 0
    for index, ((g_heads, p_heads), (g_rels, p_rels)) in enumerate(zip(heads, rels, strict=True)):
        _same_length(index, g_heads, p_heads)
        _same_length(index, g_rels, p_rels)
        _same_length(index, g_heads, g_rels)
        for g_head, p_head, g_rel, p_rel in zip(g_heads, p_heads, g_rels, p_rels, strict=True):
            total += 1
            if g_head == p_head:
                attached += 1
                labelled += g_rel == p_rel
    if total == 0:
        raise ValueError("no words to score")
    return attached / total, labelled / total


def _split_tag(tag: str) -> tuple[str, str]:
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return "O", ""


def _chunk_ends(prev_prefix: str, prefix: str, prev_type: str, chunk_type: str) -> bool:
    if prev_prefix in ("E", "S"):
        return True
    if prev_prefix in ("B", "I") and prefix in ("B", "S", "O"):
        return True
    return prev_prefix != "O" and prev_type != chunk_type


def _chunk_starts(prev_prefix: str, prefix: str, prev_type: str, chunk_type: str) -> bool:
    if prefix in ("B", "S"):
        return True
    if prefix in ("I", "E") and prev_prefix in ("E", "S", "O"):
        return True
    return prefix != "O" and prev_type != chunk_type


def _paired(gold: Sequence[Item], pred: Sequence[Item], what: str) -> list[tuple[Item, Item]]:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold {what} sentences but {len(pred)} predicted")
    return list(zip(gold, pred, strict=True))


def _same_length(index: int, first: Sequence[object], second: Sequence[object]) -> None:
    if len(first) != len(second):
        raise ValueError(f"sentence {index}: {len(first)} vs {len(second)} items")
