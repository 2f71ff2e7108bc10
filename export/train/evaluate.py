"""Scores during and after training: the task's own metric and retrieval P@1 on the stsb_multi_mt dev set.

Retrieval embeds texts in-process with PyTorch, pooled the way the exported member pools (masked mean of
the encoder's last layer, which training has already cut to the member's layer, then L2-normalised), so
the dev numbers that choose steps, alphas and members are the numbers the service would reproduce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from export.tasks import TaskData
from export.tasks.metrics import attachment_scores, p_at_1, span_f1, tag_accuracy
from export.train.features import Example, PairExample, WordExample, collate, pad
from export.train.heads import TaskHead, mean_pool
from export.train.runtime import Runtime

EVAL_BATCH = 64
# Predicted label for a word lost to truncation: never equal to a gold label, outside every chunk.
MISSING = "<missing>"

RetrievalDev = Mapping[str, tuple[Sequence[str], Sequence[str]]]


@torch.no_grad()
def embed(
    encoder: nn.Module, tokenizer: Any, texts: Sequence[str], prefix: str, max_length: int, runtime: Runtime
) -> np.ndarray:
    """Unit-norm float32 [n, dim] mean-pooled embeddings; batches are length-sorted to waste little padding."""
    encoder.eval()
    ids = tokenizer([prefix + t for t in texts], truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: np.ndarray | None = None
    for start in range(0, len(order), EVAL_BATCH):
        rows = order[start : start + EVAL_BATCH]
        input_ids, mask = pad([ids[i] for i in rows], int(tokenizer.pad_token_id))
        input_ids, mask = input_ids.to(runtime.device), mask.to(runtime.device)
        with runtime.autocast():
            hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = nn.functional.normalize(mean_pool(hidden.float(), mask), dim=-1).cpu().numpy()
        if out is None:
            out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
        out[rows] = pooled
    if out is None:
        raise ValueError("no texts to embed")
    return out


def retrieval_p1(
    encoder: nn.Module, tokenizer: Any, dev: RetrievalDev, prefix: str, max_length: int, runtime: Runtime
) -> dict[str, float]:
    """xx->en P@1 per language and their mean ("mean"); each distinct text is embedded once."""
    texts = sorted({t for src, tgt in dev.values() for t in (*src, *tgt)})
    vectors = embed(encoder, tokenizer, texts, prefix, max_length, runtime)
    row = {text: i for i, text in enumerate(texts)}
    scores: dict[str, float] = {}
    for lang, (src, tgt) in dev.items():
        scores[lang] = p_at_1(vectors[[row[t] for t in src]], vectors[[row[t] for t in tgt]])
    scores["mean"] = float(np.mean([scores[lang] for lang in dev]))
    return scores


def sample_retrieval_dev(dev: RetrievalDev, n: int) -> dict[str, tuple[list[str], list[str]]]:
    """The first `n` pairs of each language: a fixed, cheap in-loop proxy (P@1 among n candidates)."""
    return {lang: (list(src[:n]), list(tgt[:n])) for lang, (src, tgt) in dev.items()}


@torch.no_grad()
def predict(
    encoder: nn.Module, head: TaskHead, kind: str, examples: Sequence[Example], pad_id: int, runtime: Runtime
) -> list[Any]:
    """Per-example predictions in input order: label-id lists (tagging), (heads, rels) (parsing), or a number."""
    encoder.eval()
    head.eval()
    order = sorted(range(len(examples)), key=lambda i: _length(examples[i]))
    results: list[Any] = [None] * len(examples)
    for start in range(0, len(order), EVAL_BATCH):
        rows = order[start : start + EVAL_BATCH]
        batch = collate(kind, [examples[i] for i in rows], pad_id).to(runtime.device)
        with runtime.autocast():
            hidden = [encoder(input_ids=ids, attention_mask=mask).last_hidden_state for ids, mask in batch.texts]
            output = {key: value.cpu() for key, value in head.predict(hidden, batch).items()}
        for position, index in enumerate(rows):
            results[index] = _unbatch(kind, output, position, examples[index])
    return results


def task_scores(task: TaskData[Any], records: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """The task's metrics: accuracy (upos, xpos, ccg, nli), span P/R/F1 (chunk), UAS/LAS (deps), r/rho (sts)."""
    if task.kind == "tagging":
        gold = [list(r.tags) for r in records]
        pred = [[_decode(task, i) for i in p] for p in predictions]
        scores = {"accuracy": tag_accuracy(gold, pred)}
        if task.name == "chunk":
            spans = span_f1(gold, pred)
            scores.update(precision=spans.precision, recall=spans.recall, f1=spans.f1)
        return scores
    if task.kind == "parsing":
        pred_heads = [list(heads) for heads, _ in predictions]
        pred_rels = [[_decode(task, i) for i in rels] for _, rels in predictions]
        gold_heads = [list(r.heads) for r in records]
        gold_rels = [list(r.rels) for r in records]
        uas, las_full = attachment_scores(gold_heads, gold_rels, pred_heads, pred_rels)
        _, las = attachment_scores(gold_heads, _universal(gold_rels), pred_heads, _universal(pred_rels))
        return {"uas": uas, "las": las, "las_full": las_full}
    if task.kind == "pair_regression":
        gold_scores = np.array([r.score for r in records], dtype=np.float64)
        predicted = np.array(predictions, dtype=np.float64)
        spearman = _pearson(_ranks(gold_scores), _ranks(predicted))
        return {"pearson": _pearson(gold_scores, predicted), "spearman": spearman}
    gold_labels = [r.label for r in records]
    pred_labels = [_decode(task, int(p)) for p in predictions]
    return {"accuracy": float(np.mean([g == p for g, p in zip(gold_labels, pred_labels, strict=True)]))}


def primary_metric(task: TaskData[Any]) -> str:
    """The one task number used in the selection rule and reported first."""
    if task.name == "chunk":
        return "f1"
    return {"tagging": "accuracy", "parsing": "las", "pair_regression": "spearman"}.get(task.kind, "accuracy")


def _length(example: Example) -> int:
    return len(example.ids) if isinstance(example, WordExample) else max(len(example.ids_a), len(example.ids_b))


def _unbatch(kind: str, output: dict[str, torch.Tensor], row: int, example: Example) -> Any:
    if isinstance(example, PairExample):
        key = "score" if kind == "pair_regression" else "label"
        return float(output[key][row])
    if kind == "tagging":
        labels = output["labels"][row]
        return [int(labels[p]) if p >= 0 else -1 for p in example.first_token]
    heads, rels = output["heads"][row], output["rels"][row]
    slots = range(1, len(example.first_token) + 1)
    return (
        [int(heads[w]) if example.first_token[w - 1] >= 0 else -1 for w in slots],
        [int(rels[w]) if example.first_token[w - 1] >= 0 else -1 for w in slots],
    )


def _decode(task: TaskData[Any], index: int) -> str:
    if index < 0 or task.labels is None:
        return MISSING
    return task.labels.decode(index)


def _universal(rels: list[list[str]]) -> list[list[str]]:
    """UD-style LAS (CoNLL 2018) compares universal relations: 'nmod:poss' scores as 'nmod'."""
    return [[rel.split(":")[0] for rel in sentence] for sentence in rels]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0
        start = end + 1
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return 0.0  # constant predictions carry no correlation (and a collapsed model must not score)
    return float(np.corrcoef(x, y)[0, 1])
