"""Task records -> token ids and aligned targets, and padded tensor batches.

Texts are fed exactly as the exported member will see them: the text prefix ("query: " for E5) in front,
the words joined by single spaces, the tokenizer's own special tokens around. Word labels sit on the first
sub-token of each word; every other position (prefix, specials, continuation pieces, padding) is -100 so
the loss ignores it. Words that fall beyond the truncation limit keep `first_token = -1`: they are skipped
in training and count as errors at evaluation, never silently dropped from the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from export.tasks import LabelVocab, ParsedSentence, SentencePair, TaggedSentence, TaskData

IGNORE = -100


@dataclass(frozen=True)
class WordExample:
    """One tokenised sentence: ids, the first sub-token of each word (-1 if lost), per-word target ids."""

    ids: tuple[int, ...]
    first_token: tuple[int, ...]
    labels: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()


@dataclass(frozen=True)
class PairExample:
    """Two separately tokenised texts (bi-encoder, as retrieval uses them) and a class id or a score."""

    ids_a: tuple[int, ...]
    ids_b: tuple[int, ...]
    target: float


Example = WordExample | PairExample


@dataclass
class Batch:
    """`texts`: one (input_ids, attention_mask) per text side; `targets`: head-specific tensors."""

    texts: list[tuple[torch.Tensor, torch.Tensor]]
    targets: dict[str, torch.Tensor]

    def to(self, device: torch.device) -> Batch:
        return Batch(
            [(ids.to(device), mask.to(device)) for ids, mask in self.texts],
            {key: value.to(device) for key, value in self.targets.items()},
        )


def encode_words(
    tokenizer: Any, sentences: Sequence[Sequence[str]], prefix: str, max_length: int
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(ids, first sub-token position per word) of `prefix + ' '.join(words)` for each sentence.

    The prefix is passed as its own pre-split words so `word_ids()` can tell prefix pieces from sentence
    pieces; for whitespace-splitting tokenizers (XLM-R's SentencePiece, the tiny BPE) this gives exactly
    the ids of the joined string (checked by the tests).
    """
    prefix_words = prefix.split()
    skip = len(prefix_words)
    encoded = tokenizer(
        [[*prefix_words, *words] for words in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
    )
    result: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for index, words in enumerate(sentences):
        first = [-1] * len(words)
        for position, word_id in enumerate(encoded.word_ids(index)):
            if word_id is not None and word_id >= skip and first[word_id - skip] == -1:
                first[word_id - skip] = position
        result.append((tuple(encoded["input_ids"][index]), tuple(first)))
    return result


def build_examples(
    task: TaskData[Any], records: Sequence[Any], tokenizer: Any, prefix: str, max_length: int
) -> list[Example]:
    """Examples for any task kind; label ids come from the task's (train-only) vocabulary."""
    if task.kind in ("tagging", "parsing"):
        encoded = encode_words(tokenizer, [record.words for record in records], prefix, max_length)
        vocab = _vocab(task)
        if task.kind == "tagging":
            return [
                WordExample(ids, first, tuple(vocab.encode(tag) for tag in record.tags))
                for (ids, first), record in zip(encoded, records, strict=True)
                if isinstance(record, TaggedSentence)
            ]
        return [
            WordExample(ids, first, tuple(vocab.encode(rel) for rel in record.rels), record.heads)
            for (ids, first), record in zip(encoded, records, strict=True)
            if isinstance(record, ParsedSentence)
        ]
    pairs = [record for record in records if isinstance(record, SentencePair)]
    if len(pairs) != len(records):
        raise TypeError(f"task {task.name} expects SentencePair records")
    texts_a = tokenizer([prefix + p.a for p in pairs], truncation=True, max_length=max_length)["input_ids"]
    texts_b = tokenizer([prefix + p.b for p in pairs], truncation=True, max_length=max_length)["input_ids"]
    targets = [_pair_target(task, p) for p in pairs]
    return [PairExample(tuple(a), tuple(b), t) for a, b, t in zip(texts_a, texts_b, targets, strict=True)]


def collate(kind: str, examples: Sequence[Example], pad_id: int) -> Batch:
    """Pad a list of examples of one task kind into tensors."""
    if kind == "tagging":
        words = word_examples(examples)
        ids, mask = pad([e.ids for e in words], pad_id)
        labels = torch.full(ids.shape, IGNORE, dtype=torch.long)
        for row, example in enumerate(words):
            for position, label in zip(example.first_token, example.labels, strict=True):
                if position >= 0:
                    labels[row, position] = label
        return Batch([(ids, mask)], {"labels": labels})
    if kind == "parsing":
        return _collate_parsing(word_examples(examples), pad_id)
    pairs = [e for e in examples if isinstance(e, PairExample)]
    target_dtype = torch.float32 if kind == "pair_regression" else torch.long
    return Batch(
        [pad([p.ids_a for p in pairs], pad_id), pad([p.ids_b for p in pairs], pad_id)],
        {"target": torch.tensor([p.target for p in pairs], dtype=target_dtype)},
    )


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask) as int64, the layout the ONNX members take too."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def _collate_parsing(examples: list[WordExample], pad_id: int) -> Batch:
    """Word slots: 0 is ROOT (read from the <s> token), slot w is word w; heads/rels are -100 where unusable.

    A word is usable as a dependent when it and its gold head both survived truncation, and as a head
    candidate when it survived.
    """
    ids, mask = pad([e.ids for e in examples], pad_id)
    slots = 1 + max(len(e.first_token) for e in examples)
    word_index = torch.zeros((len(examples), slots), dtype=torch.long)
    word_mask = torch.zeros((len(examples), slots), dtype=torch.bool)
    heads = torch.full((len(examples), slots), IGNORE, dtype=torch.long)
    rels = torch.full((len(examples), slots), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        word_mask[row, 0] = True
        for word, position in enumerate(example.first_token, start=1):
            if position >= 0:
                word_index[row, word] = position
                word_mask[row, word] = True
        for word, (head, rel) in enumerate(zip(example.heads, example.labels, strict=True), start=1):
            if word_mask[row, word] and word_mask[row, head]:
                heads[row, word] = head
                rels[row, word] = rel
    return Batch([(ids, mask)], {"word_index": word_index, "word_mask": word_mask, "heads": heads, "rels": rels})


def word_examples(examples: Sequence[Example]) -> list[WordExample]:
    """The examples of a word-level task as WordExamples; a pair example among them is a bug (TypeError)."""
    words = [e for e in examples if isinstance(e, WordExample)]
    if len(words) != len(examples):
        raise TypeError("word-level task got pair examples")
    return words


def _vocab(task: TaskData[Any]) -> LabelVocab:
    if task.labels is None:
        raise ValueError(f"task {task.name} ({task.kind}) has no label vocabulary")
    return task.labels


def _pair_target(task: TaskData[Any], pair: SentencePair) -> float:
    if task.kind == "pair_regression":
        if pair.score is None:
            raise ValueError(f"task {task.name}: pair {pair.a!r} has no score")
        return pair.score
    if pair.label is None:
        raise ValueError(f"task {task.name}: pair {pair.a!r} has no label")
    return float(_vocab(task).encode(pair.label))
