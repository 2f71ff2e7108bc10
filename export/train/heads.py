"""Task heads: small modules on top of the encoder, trained with it and dropped before export.

Every head takes the encoder's last hidden states (one tensor per text side of the batch) and the batch's
targets, so the training loop stays task-agnostic and can share the encoder forward pass between the task
loss and the retention loss. Heads compute in float32 even under bf16 autocast: their logits feed
cross-entropy and argmax, where bf16's 8-bit mantissa costs accuracy for no speed.

Pair heads read mean-pooled sentence embeddings, the same pooling the exported member uses, so what they
teach the encoder is shaped like what the service will consume.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from export.tasks import TaskData
from export.train.features import IGNORE, Batch

_MASKED = -1e9


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: the member's pooling (see onnx_export.PooledEncoder), unnormalised."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class TaskHead(nn.Module):
    """Interface: `loss` for training, `predict` for evaluation (ids or scores per record)."""

    def loss(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, hidden: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class TaggingHead(TaskHead):
    """Dropout + linear per token; trained only on first sub-tokens (labels are -100 elsewhere)."""

    def __init__(self, hidden_size: int, n_labels: int, dropout: float = 0.1, blocked_label: int | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, n_labels)
        # the catch-all `<unk>` label is always an error at scoring time, so it is never predicted
        self.blocked_label = blocked_label

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden.float()))

    def loss(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        logits = self.logits(hidden[0])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets["labels"].reshape(-1))

    def predict(self, hidden: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.logits(hidden[0])
        if self.blocked_label is not None:
            logits[..., self.blocked_label] = _MASKED
        return {"labels": logits.argmax(dim=-1)}


class _MLP(nn.Sequential):
    def __init__(self, hidden_size: int, out_size: int, dropout: float) -> None:
        super().__init__(nn.Linear(hidden_size, out_size), nn.GELU(), nn.Dropout(dropout))


class BiaffineParserHead(TaskHead):
    """Dozat & Manning's biaffine parser: arc scores dep_i^T W head_j + u^T head_j, relation biaffine per label.

    Word vectors are the first sub-token states; slot 0 is ROOT, read from the <s> token. Decoding is a
    greedy argmax per word (no spanning-tree constraint): simpler and what most intermediate-task work uses
    for a probe-like parser; UAS/LAS are therefore slightly below an MST decoder's.
    """

    def __init__(
        self,
        hidden_size: int,
        n_rels: int,
        arc_dim: int = 256,
        rel_dim: int = 128,
        dropout: float = 0.1,
        blocked_label: int | None = None,
    ) -> None:
        super().__init__()
        self.blocked_label = blocked_label
        self.dropout = nn.Dropout(dropout)
        self.arc_dep = _MLP(hidden_size, arc_dim, dropout)
        self.arc_head = _MLP(hidden_size, arc_dim, dropout)
        self.rel_dep = _MLP(hidden_size, rel_dim, dropout)
        self.rel_head = _MLP(hidden_size, rel_dim, dropout)
        # zero-initialised bilinear weights (as Dozat & Manning): all arcs start equally likely
        self.arc_weight = nn.Parameter(torch.zeros(arc_dim, arc_dim))
        self.arc_bias = nn.Linear(arc_dim, 1, bias=False)
        self.rel_weight = nn.Parameter(torch.zeros(n_rels, rel_dim + 1, rel_dim + 1))

    def scores(self, hidden: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(arc scores [B, dep, head] with impossible heads masked, relation dep and head features)."""
        index = batch.targets["word_index"]
        words = hidden.float().gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        words = self.dropout(words)
        dep, head = self.arc_dep(words), self.arc_head(words)
        arcs = torch.einsum("bia,ac,bjc->bij", dep, self.arc_weight, head) + self.arc_bias(head).transpose(1, 2)
        candidates = batch.targets["word_mask"].unsqueeze(1)
        self_loop = torch.eye(arcs.shape[1], dtype=torch.bool, device=arcs.device).unsqueeze(0)
        arcs = arcs.masked_fill(~candidates | self_loop, _MASKED)
        return arcs, self.rel_dep(words), self.rel_head(words)

    def relation_logits(self, rel_dep: torch.Tensor, rel_head: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """[B, dep, n_rels] for the given head of every dependent."""
        chosen = rel_head.gather(1, heads.clamp(min=0).unsqueeze(-1).expand(-1, -1, rel_head.shape[-1]))
        ones = torch.ones_like(rel_dep[..., :1])
        dep1, head1 = torch.cat([rel_dep, ones], dim=-1), torch.cat([chosen, ones], dim=-1)
        return torch.einsum("bnd,rde,bne->bnr", dep1, self.rel_weight, head1)

    def loss(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        arcs, rel_dep, rel_head = self.scores(hidden[0], batch)
        heads, rels = batch.targets["heads"], batch.targets["rels"]
        arc_loss = F.cross_entropy(arcs.reshape(-1, arcs.shape[-1]), heads.reshape(-1), ignore_index=IGNORE)
        rel_logits = self.relation_logits(rel_dep, rel_head, heads)
        rel_loss = F.cross_entropy(rel_logits.reshape(-1, rel_logits.shape[-1]), rels.reshape(-1), ignore_index=IGNORE)
        return arc_loss + rel_loss

    def predict(self, hidden: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        arcs, rel_dep, rel_head = self.scores(hidden[0], batch)
        heads = arcs.argmax(dim=-1)
        rel_logits = self.relation_logits(rel_dep, rel_head, heads)
        if self.blocked_label is not None:
            rel_logits[..., self.blocked_label] = _MASKED
        return {"heads": heads, "rels": rel_logits.argmax(dim=-1)}


class PairRegressionHead(TaskHead):
    """score/5 ~ a * cos(u, v) + b (Sentence-BERT's cosine objective with a learnt affine map).

    Regressing the cosine itself, rather than an MLP over both vectors, makes the encoder's geometry carry
    the similarity, which is what retrieval reads.
    """

    def __init__(self, max_score: float = 5.0) -> None:
        super().__init__()
        self.max_score = max_score
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.shift = nn.Parameter(torch.tensor(0.5))

    def similarity(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        (_, mask_a), (_, mask_b) = batch.texts
        u, v = mean_pool(hidden[0].float(), mask_a), mean_pool(hidden[1].float(), mask_b)
        return self.scale * F.cosine_similarity(u, v, dim=-1) + self.shift

    def loss(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return F.mse_loss(self.similarity(hidden, batch), batch.targets["target"] / self.max_score)

    def predict(self, hidden: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return {"score": self.similarity(hidden, batch) * self.max_score}


class PairClassificationHead(TaskHead):
    """Softmax over [u, v, |u - v|, u * v] of the pooled embeddings (Sentence-BERT's NLI classifier)."""

    def __init__(self, hidden_size: int, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * hidden_size, n_labels)

    def logits(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        (_, mask_a), (_, mask_b) = batch.texts
        u, v = mean_pool(hidden[0].float(), mask_a), mean_pool(hidden[1].float(), mask_b)
        return self.classifier(self.dropout(torch.cat([u, v, (u - v).abs(), u * v], dim=-1)))

    def loss(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(hidden, batch), batch.targets["target"])

    def predict(self, hidden: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return {"label": self.logits(hidden, batch).argmax(dim=-1)}


def build_head(task: TaskData[Any], hidden_size: int) -> TaskHead:
    """The head for the task's kind, sized from its label vocabulary."""
    if task.kind == "pair_regression":
        return PairRegressionHead()
    if task.labels is None:
        raise ValueError(f"task {task.name} ({task.kind}) needs a label vocabulary")
    blocked = task.labels.encode(task.labels.unk) if task.labels.unk is not None else None
    if task.kind == "tagging":
        return TaggingHead(hidden_size, len(task.labels), blocked_label=blocked)
    if task.kind == "parsing":
        return BiaffineParserHead(hidden_size, len(task.labels), blocked_label=blocked)
    return PairClassificationHead(hidden_size, len(task.labels))
