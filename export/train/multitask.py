"""The `multi` task: one encoder trained on several tasks at once, one head per task, one task per step.

Each step draws one task and trains on a batch of that task only (task-sampled batches), so every batch
has one head, one collate layout and one loss scale. The task of every step is fixed up front from the
seed: probability proportional to sqrt(train size) by default (Stickland & Murray's "square-root
sampling": the 12k-sentence treebanks lead, yet the 1k-sentence CCG set still gets a fair share instead
of the 3 % that size-proportional sampling would give it), or uniform. Within a task, batches follow the
same deterministic per-epoch permutations as single-task training, so resume stays exact.

The selection rule reads the mean of the sub-tasks' primary metrics ("mean"); every sub-task score is
also reported as `<task>_<metric>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.tasks import TaskData
from export.train.config import TrainConfig, TrainConfigError
from export.train.evaluate import RetrievalDev, predict, primary_metric, task_scores
from export.train.features import Batch, Example, build_examples, collate
from export.train.heads import TaskHead, build_head
from export.train.loop import Trainer

TASK_INDEX = "task_index"
MEAN = "mean"
_SCHEDULE_STREAM = 7919  # separates the task-choice RNG stream from the data-order streams
_PROBE_SCHEDULE_STREAM = 7927  # and the probe's task choices from the joint phase's


class MultiHead(TaskHead):
    """One head per task; a batch's `task_index` target says which one computes its loss."""

    def __init__(self, heads: dict[str, TaskHead]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.names = list(heads)

    def head_for(self, batch: Batch) -> TaskHead:
        head = self.heads[self.names[int(batch.targets[TASK_INDEX])]]
        assert isinstance(head, TaskHead)
        return head

    def loss(self, hidden: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return self.head_for(batch).loss(hidden, batch)

    def predict(self, hidden: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return self.head_for(batch).predict(hidden, batch)


def task_probabilities(sizes: Sequence[int], sampling: str) -> np.ndarray:
    """P(task) per step: proportional to sqrt(train size), or uniform."""
    weights = np.sqrt(np.asarray(sizes, dtype=np.float64)) if sampling == "sqrt" else np.ones(len(sizes))
    return weights / weights.sum()


class MultiTaskTrainer(Trainer):
    """Trainer over several tasks; `examples` is their concatenation, `offsets[k]` where task k starts."""

    def __init__(
        self,
        config: TrainConfig,
        base_checkpoint: Path,
        tasks: Sequence[TaskData[Any]],
        retrieval_dev: RetrievalDev,
        work_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(config, base_checkpoint, list(tasks), retrieval_dev, work_dir=work_dir, progress=progress)

    def _setup_task(self, task: Any, hidden_size: int) -> TaskHead:
        tasks: list[TaskData[Any]] = list(task)
        names = tuple(t.name for t in tasks)
        if names != self.config.multi_tasks:
            raise TrainConfigError(f"multi_tasks is {list(self.config.multi_tasks)} but the data is for {list(names)}")
        self.tasks = tasks
        return MultiHead({t.name: build_head(t, hidden_size) for t in tasks})

    def _prepare_examples(self) -> None:
        config = self.config
        self.task_examples = [self._task_examples(t, t.train, config.max_length) for t in self.tasks]
        self.offsets = np.cumsum([0, *(len(e) for e in self.task_examples)])
        self.examples = [e for examples in self.task_examples for e in examples]
        self.dev_samples = [t.dev[: config.eval_task_sample] for t in self.tasks]
        self.dev_sample_examples_by_task = [
            self._task_examples(t, records, self.eval_max_length)
            for t, records in zip(self.tasks, self.dev_samples, strict=True)
        ]
        probabilities = task_probabilities([len(e) for e in self.task_examples], config.multi_sampling)
        rng = np.random.default_rng([config.seed, _SCHEDULE_STREAM])
        self.schedule = rng.choice(len(self.tasks), size=config.steps, p=probabilities)
        # the head-only probe draws its tasks from a stream of its own, so adding a probe leaves the joint
        # phase's schedule (and a run without a probe) exactly as it was
        probe_rng = np.random.default_rng([config.seed, _PROBE_SCHEDULE_STREAM])
        self.probe_schedule = probe_rng.choice(len(self.tasks), size=config.probe_steps, p=probabilities)
        self.probabilities = probabilities

    def _task_examples(self, task: TaskData[Any], records: list[Any], max_length: int) -> list[Example]:
        return build_examples(task, records, self.tokenizer, self.config.text_prefix, max_length)

    # --- training -----------------------------------------------------------------------------------------

    def batch_indices(self, step: int) -> list[int]:
        """Global indices of step's batch: all from the task the schedule drew for this step."""
        return self._scheduled_indices(self.schedule, step)

    def probe_batch_indices(self, step: int) -> list[int]:
        """The probe's batches: one task per step from the probe schedule, each head fits its own task."""
        return self._scheduled_indices(self.probe_schedule, step)

    def _scheduled_indices(self, schedule: np.ndarray, step: int) -> list[int]:
        k = int(schedule[step])
        occurrence = int(np.count_nonzero(schedule[:step] == k))
        size, n = self.config.batch_size, len(self.task_examples[k])
        indices = []
        for position in range(occurrence * size, (occurrence + 1) * size):
            epoch, within = divmod(position, n)
            order = np.random.default_rng([self.config.seed, k, epoch]).permutation(n)
            indices.append(int(self.offsets[k]) + int(order[within]))
        return indices

    def task_of(self, index: int) -> int:
        return int(np.searchsorted(self.offsets, index, side="right")) - 1

    def batch(self, indices: list[int]) -> Batch:
        k = self.task_of(indices[0])
        if any(self.task_of(i) != k for i in indices):
            raise ValueError("a multi-task batch must hold examples of one task")
        batch = collate(self.tasks[k].kind, [self.examples[i] for i in indices], self.pad_id)
        batch.targets[TASK_INDEX] = torch.tensor(k)
        return batch.to(self.runtime.device)

    # --- evaluation ---------------------------------------------------------------------------------------

    def evaluate(self, full: bool = False) -> dict[str, Any]:
        scores: dict[str, float] = {}
        for k, task in enumerate(self.tasks):
            records = task.dev if full else self.dev_samples[k]
            examples = (
                self._task_examples(task, records, self.eval_max_length)
                if full
                else self.dev_sample_examples_by_task[k]
            )
            scores.update(self._scores(k, records, examples))
        scores[MEAN] = float(np.mean([scores[f"{t.name}_{primary_metric(t)}"] for t in self.tasks]))
        retrieval = self._retrieval(self.encoder, self.retrieval_dev if full else self.retrieval_sample)
        return {"task": scores, "retrieval": retrieval, "selection": self.selection(scores, retrieval)}

    def _scores(self, k: int, records: list[Any], examples: list[Example]) -> dict[str, float]:
        task = self.tasks[k]
        assert isinstance(self.head, MultiHead)
        head = self.head.heads[task.name]
        assert isinstance(head, TaskHead)
        predictions = predict(self.encoder, head, task.kind, examples, self.pad_id, self.runtime)
        return {f"{task.name}_{m}": v for m, v in task_scores(task, records, predictions).items()}

    def selection_metric(self) -> str:
        return MEAN

    def test_scores(self) -> dict[str, float]:
        scores: dict[str, float] = {}
        for k, task in enumerate(self.tasks):
            scores.update(self._scores(k, task.test, self._task_examples(task, task.test, self.eval_max_length)))
        scores[MEAN] = float(np.mean([scores[f"{t.name}_{primary_metric(t)}"] for t in self.tasks]))
        return scores

    def data_summary(self) -> str:
        shares = ", ".join(f"{t.name} {p:.2f}" for t, p in zip(self.tasks, self.probabilities, strict=True))
        return "; ".join(t.summary() for t in self.tasks) + f"; step shares ({self.config.multi_sampling}): {shares}"
