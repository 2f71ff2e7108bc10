"""Intermediate-task training of one encoder: the loop, its checkpoints, and `train_member`.

The design follows the issue's pilot: naive fine-tuning wrecks multilingual-e5's sentence geometry, so
every run measures retrieval P@1 on the stsb_multi_mt dev set next to its task score and picks what it
keeps by both.

Selection rule (best step, and WiSE-FT alpha when several are given):
    selection = (1 - w) * retrieval dev P@1 (mean over dev_retrieval_langs, in-loop sample)
              + w * task dev score (primary metric: accuracy, chunk F1, LAS, Spearman; in-loop sample)
with w = `select_task_weight` (0.5). The step-0 evaluation (untrained head) is recorded as the base
reference but is never a candidate. The best-scoring evaluation's weights are restored at the end;
`patience` > 0 stops after that many evaluations without improvement. The kept model is then scored on
the full dev sets and the task's test split; only dev numbers ever choose anything.

Reproducibility: one seed fixes head/LoRA init, dropout and data order (epoch e is a permutation drawn
from (seed, e), so the batch of any step follows from the step number alone). Resume state holds the
trained weights, optimizer, scheduler, step, RNG and selection state; a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from export.onnx_export import ExportError, resolve_layer, truncate_layers
from export.tasks import TaskData, load_task
from export.tasks.retrieval_dev import load_retrieval_dev
from export.train.config import MULTI_TASK, TrainConfig, TrainConfigError
from export.train.evaluate import RetrievalDev, predict, primary_metric, retrieval_p1, sample_retrieval_dev, task_scores
from export.train.features import Batch, Example, build_examples, collate, word_examples
from export.train.heads import TaskHead, build_head, mean_pool
from export.train.lora import add_lora, merge_lora
from export.train.runtime import Runtime, seed_everything
from export.train.wise import TOKENIZER_FILES, interpolate
from service.repository import write_json_atomic

LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "training_summary.json"
RESUME_DIR = "resume"
STATE_FILE = "state.pt"
SELECTION_RULE = (
    "selection = (1 - select_task_weight) * retrieval_dev_p1 + select_task_weight * task_dev_primary, "
    "on the in-loop dev samples; best evaluation after step 0 kept; alpha chosen by the same rule"
)
# Knobs a resumed run may change without changing what it computes.
_RESUMABLE_DIFFERENCES = ("device",)
# XLM-R-family models number positions from pad_token_id + 1, so they hold fewer tokens than the table.
_POSITION_OFFSET_TYPES = ("xlm-roberta", "roberta", "camembert")


def load_encoder(checkpoint: Path, pool_layer: int) -> tuple[Any, int]:
    """The base encoder cut at `pool_layer` (hidden_states index, -1 = last) and that layer's index.

    Layers above the pooled one are removed before training: the member never runs them, so training them
    would cost time and let the head read a layer the service does not serve.
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint)
    try:
        layer = resolve_layer(pool_layer, int(model.config.num_hidden_layers))
    except ExportError as exc:
        raise TrainConfigError(f"pool_layer: {exc}") from None
    if layer == 0:
        raise TrainConfigError("pool_layer 0 is the embedding layer: there would be no transformer layer to train")
    truncate_layers(model, layer)
    return model, layer


def token_capacity(config: Any) -> int:
    """How many tokens the position table holds (XLM-R reserves pad_token_id + 1 rows)."""
    offset = int(config.pad_token_id) + 1 if config.model_type in _POSITION_OFFSET_TYPES else 0
    return int(config.max_position_embeddings) - offset


class Trainer:
    """One run: encoder + head + optimizer on one task, with in-loop evaluation and resumable state."""

    def __init__(
        self,
        config: TrainConfig,
        base_checkpoint: Path,
        task: TaskData[Any] | Sequence[TaskData[Any]],
        retrieval_dev: RetrievalDev,
        work_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.base_checkpoint = Path(base_checkpoint)
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.progress = progress
        self.runtime = Runtime.choose(config.device, config.precision)
        seed_everything(config.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_checkpoint)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.encoder: Any
        self.encoder, self.pool_layer = load_encoder(self.base_checkpoint, config.pool_layer)
        capacity = token_capacity(self.encoder.config)
        if config.max_length > capacity:
            raise TrainConfigError(f"max_length {config.max_length} exceeds the {capacity} tokens this model holds")
        self.eval_max_length = min(config.eval_max_length, capacity)
        # The frozen base serves the retention loss and WiSE-FT; it is only kept when one of them is on.
        needs_base = config.retention_lambda > 0 or any(a < 1.0 for a in config.wise_alpha)
        self.base = self._frozen_base() if needs_base else None
        self.head = self._setup_task(task, int(self.encoder.config.hidden_size))
        self._set_trainable()
        self.encoder.to(self.runtime.device)
        self.head.to(self.runtime.device)
        self._prepare_examples()
        self.retrieval_dev = retrieval_dev
        self.retrieval_sample = sample_retrieval_dev(retrieval_dev, config.eval_retrieval_sample)
        self.trainable = [p for p in (*self.encoder.parameters(), *self.head.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._param_groups(), betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.probe_step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_weights: dict[str, torch.Tensor] = {}
        self.evals_since_best = 0
        self.stopped_early = False
        self.elapsed = 0.0
        self._permutations: dict[int, np.ndarray] = {}

    # --- set-up -------------------------------------------------------------------------------------------

    def _setup_task(self, task: Any, hidden_size: int) -> TaskHead:
        """Keep the task data and return its head (MultiTaskTrainer overrides this for several tasks)."""
        if task.name != self.config.task:
            raise TrainConfigError(f"config is for task {self.config.task!r} but the data is for {task.name!r}")
        self.task = task
        return build_head(task, hidden_size)

    def _prepare_examples(self) -> None:
        self.examples = self._examples(self.task.train, self.config.max_length)
        if self.config.shuffle_labels:
            self.examples = shuffled_labels(self.examples, self.task.kind, self.config.seed)
        self.dev_sample = self.task.dev[: self.config.eval_task_sample]
        self.dev_sample_examples = self._examples(self.dev_sample, self.eval_max_length)

    def _frozen_base(self) -> Any:
        base, _ = load_encoder(self.base_checkpoint, self.config.pool_layer)
        base.eval().requires_grad_(False)
        return base.to(self.runtime.device)

    def _set_trainable(self) -> None:
        """Apply train_layers / freeze_embeddings; the unused pooler is always frozen (it must stay the base's)."""
        config, encoder = self.config, self.encoder
        if config.uses_lora:
            add_lora(encoder, config.lora_rank, config.lora_alpha)
        else:
            encoder.requires_grad_(True)
            top = config.top_layers
            if top is not None:
                layers = encoder.encoder.layer
                if top > len(layers):
                    raise TrainConfigError(f"train_layers top:{top} but the encoder has {len(layers)} layers")
                encoder.embeddings.requires_grad_(False)
                for layer in layers[: len(layers) - top]:
                    layer.requires_grad_(False)
            if config.freeze_embeddings:
                encoder.embeddings.requires_grad_(False)
        pooler = getattr(encoder, "pooler", None)
        if pooler is not None:
            pooler.requires_grad_(False)

    def _param_groups(self) -> list[dict[str, Any]]:
        """Encoder and head at their own learning rates; no weight decay on biases, norms and scalars."""
        groups: list[dict[str, Any]] = []
        for module, lr in ((self.encoder, self.config.lr_encoder), (self.head, self.config.lr_head)):
            params = [p for p in module.parameters() if p.requires_grad]
            for decay in (True, False):
                chosen = [p for p in params if (p.ndim >= 2) == decay]
                if chosen:
                    groups.append(
                        {"params": chosen, "lr": lr, "weight_decay": self.config.weight_decay if decay else 0.0}
                    )
        return groups

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up then linear decay to zero; never a zero-lr step."""
        total, warm = self.config.steps, self.config.warmup_steps()
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    def _examples(self, records: list[Any], max_length: int) -> list[Example]:
        return build_examples(self.task, records, self.tokenizer, self.config.text_prefix, max_length)

    # --- training -----------------------------------------------------------------------------------------

    def batch_indices(self, step: int) -> list[int]:
        """Training examples of `step`: a deterministic stream of per-epoch permutations."""
        size, n = self.config.batch_size, len(self.examples)
        indices = []
        for k in range(step * size, (step + 1) * size):
            epoch, position = divmod(k, n)
            if epoch not in self._permutations:
                self._permutations = {epoch: np.random.default_rng([self.config.seed, epoch]).permutation(n)}
            indices.append(int(self._permutations[epoch][position]))
        return indices

    def probe_batch_indices(self, step: int) -> list[int]:
        """Training examples of probe step `step`: the joint phase's stream (a probe is shorter than an epoch
        or revisits cached states, so sharing the stream costs nothing)."""
        return self.batch_indices(step)

    def batch(self, indices: list[int]) -> Batch:
        return collate(self.task.kind, [self.examples[i] for i in indices], self.pad_id).to(self.runtime.device)

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(task loss, retention loss) for a batch, in whatever train/eval mode the modules are in."""
        hidden = [self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state for ids, mask in batch.texts]
        task_loss = self.head.loss(hidden, batch)
        if self.base is None or self.config.retention_lambda == 0:
            return task_loss, torch.zeros((), device=task_loss.device)
        terms = []
        for (ids, mask), states in zip(batch.texts, hidden, strict=True):
            pooled = mean_pool(states.float(), mask)
            with torch.no_grad():
                target = mean_pool(self.base(input_ids=ids, attention_mask=mask).last_hidden_state.float(), mask)
            if self.config.retention_loss == "cos":
                terms.append((1.0 - nn.functional.cosine_similarity(pooled, target, dim=-1)).mean())
            else:
                terms.append(nn.functional.mse_loss(pooled, target))
        return task_loss, torch.stack(terms).mean()

    @torch.no_grad()
    def eval_losses(self, indices: list[int]) -> tuple[float, float]:
        """(task, retention) loss on training examples with dropout off: a noise-free probe of progress."""
        self.encoder.eval()
        self.head.eval()
        with self.runtime.autocast():
            task_loss, retention = self.losses(self.batch(indices))
        return float(task_loss), float(retention)

    def train_step(self) -> dict[str, float]:
        self.encoder.train()
        self.head.train()
        batch = self.batch(self.batch_indices(self.step))
        with self.runtime.autocast():
            task_loss, retention = self.losses(batch)
            loss = task_loss + self.config.retention_lambda * retention
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        lrs = self.scheduler.get_last_lr()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "loss": float(loss.detach()),
            "task_loss": float(task_loss.detach()),
            "retention_loss": float(retention.detach()),
            "grad_norm": float(grad_norm),
            "lr_encoder": float(lrs[0]),
            "lr_head": float(lrs[-1]),
        }

    def run(self, stop_after: int | None = None) -> bool:
        """Train to `config.steps` (or early stop); True when done, False when paused at `stop_after`."""
        clock = time.monotonic()
        if not self.history:
            self._record_eval(self.evaluate(), candidate=False)
        if self.step == 0 and self.probe_step < self.config.probe_steps:
            self.probe()
        bar = tqdm(
            total=self.config.steps, initial=self.step, desc=f"train {self.config.task}", disable=not self.progress
        )
        try:
            while self.step < self.config.steps and not self.stopped_early:
                metrics = self.train_step()
                self._log({"step": self.step, **metrics})
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", ret=f"{metrics['retention_loss']:.4f}")
                evaluate = self.step % self.config.eval_every == 0 or self.step == self.config.steps
                if evaluate:
                    self._record_eval(self.evaluate(), candidate=True)
                    bar.set_postfix(sel=f"{self.history[-1]['selection']:.4f}")
                now = time.monotonic()
                self.elapsed, clock = self.elapsed + now - clock, now
                paused = stop_after is not None and stop_after <= self.step < self.config.steps
                if (evaluate or paused) and self.work_dir is not None:
                    self.save_state(self.work_dir / RESUME_DIR / STATE_FILE)
                if paused:
                    return False
        finally:
            bar.close()
        return True

    def probe(self) -> None:
        """LP-FT's first phase: fit the head alone on the frozen encoder's states, then evaluate it.

        The encoder runs without gradients and with dropout off (its features are fixed, as in a linear
        probe), so each training example's states are computed once and cached: after the first epoch a
        probe step costs only the head, and a randomly initialised head (a biaffine parser needs several
        epochs) can be trained to convergence for about one epoch of encoder forward passes. The head has
        its own constant-rate optimizer, so the joint phase's schedule is untouched.
        """
        head_params = [p for p in self.head.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(head_params, lr=self.config.lr_head, weight_decay=0.0)
        self.encoder.eval()
        self.head.train()
        cache: dict[int, list[torch.Tensor]] = {}
        total = self.config.probe_steps
        bar = tqdm(total=total, initial=self.probe_step, desc=f"probe {self.config.task}", disable=not self.progress)
        try:
            while self.probe_step < total:
                indices = self.probe_batch_indices(self.probe_step)
                self._cache_states(cache, [i for i in dict.fromkeys(indices) if i not in cache])
                batch = self.batch(indices)
                hidden = [
                    _pad_states([cache[i][side] for i in indices], ids.shape[1]).to(self.runtime.device)
                    for side, (ids, _) in enumerate(batch.texts)
                ]
                with self.runtime.autocast():
                    loss = self.head.loss(hidden, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(head_params, self.config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.probe_step += 1
                self._log({"probe_step": self.probe_step, "task_loss": float(loss.detach())})
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", cached=len(cache))
        finally:
            bar.close()
        self._record_eval(self.evaluate(), candidate=False, label="probe")
        if self.work_dir is not None:
            self.save_state(self.work_dir / RESUME_DIR / STATE_FILE)

    @torch.no_grad()
    def _cache_states(self, cache: dict[int, list[torch.Tensor]], indices: list[int]) -> None:
        """Frozen-encoder states of these training examples, unpadded per text side, kept on the CPU."""
        if not indices:
            return
        batch = self.batch(indices)
        with self.runtime.autocast():
            states = [self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state for ids, mask in batch.texts]
        for row, index in enumerate(indices):
            cache[index] = [
                side[row, : int(mask[row].sum())].float().cpu()
                for side, (_, mask) in zip(states, batch.texts, strict=True)
            ]

    # --- evaluation and selection -------------------------------------------------------------------------

    def evaluate(self, full: bool = False) -> dict[str, Any]:
        """Task dev score and retrieval dev P@1 (in-loop samples, or the full dev sets with `full`)."""
        records = self.task.dev if full else self.dev_sample
        examples = self._examples(records, self.eval_max_length) if full else self.dev_sample_examples
        task = task_scores(self.task, records, self._predict(examples))
        retrieval = self._retrieval(self.encoder, self.retrieval_dev if full else self.retrieval_sample)
        return {"task": task, "retrieval": retrieval, "selection": self.selection(task, retrieval)}

    def selection(self, task: Mapping[str, float], retrieval: Mapping[str, float]) -> float:
        weight = self.config.select_task_weight
        return (1.0 - weight) * retrieval["mean"] + weight * task[self.selection_metric()]

    def selection_metric(self) -> str:
        """Key of the task score the selection rule reads."""
        return primary_metric(self.task)

    def test_scores(self) -> dict[str, float]:
        """Task scores on the test split (reported only, never used to choose anything)."""
        test_examples = self._examples(self.task.test, self.eval_max_length)
        return task_scores(self.task, self.task.test, self._predict(test_examples))

    def data_summary(self) -> str:
        return self.task.summary()

    def _predict(self, examples: list[Example]) -> list[Any]:
        return predict(self.encoder, self.head, self.task.kind, examples, self.pad_id, self.runtime)

    def _retrieval(self, encoder: nn.Module, dev: RetrievalDev) -> dict[str, float]:
        return retrieval_p1(encoder, self.tokenizer, dev, self.config.text_prefix, self.eval_max_length, self.runtime)

    def _record_eval(self, result: dict[str, Any], candidate: bool, label: str = "sample") -> None:
        entry = {"step": self.step, "eval": label, **result}
        if candidate:
            improved = self.best is None or result["selection"] > self.best["selection"]
            entry["best"] = improved
            if improved:
                self.best = {"step": self.step, "selection": result["selection"]}
                self.best_weights = self._trained_weights()
                self.evals_since_best = 0
            else:
                self.evals_since_best += 1
                self.stopped_early = 0 < self.config.patience <= self.evals_since_best
        self.history.append(entry)
        self._log(entry)

    def _trained_weights(self) -> dict[str, torch.Tensor]:
        """CPU copies of every weight training can change (frozen ones equal the base checkpoint's)."""
        weights = {f"encoder.{n}": p for n, p in self.encoder.named_parameters() if p.requires_grad}
        weights.update({f"head.{n}": t for n, t in self.head.state_dict().items()})
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}

    def _load_trained_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        encoder_params = dict(self.encoder.named_parameters())
        expected = {f"encoder.{n}" for n, p in encoder_params.items() if p.requires_grad}
        expected |= {f"head.{n}" for n in self.head.state_dict()}
        if set(weights) != expected:
            raise ValueError(f"saved weights do not match this model ({len(set(weights) ^ expected)} names differ)")
        with torch.no_grad():
            for name, tensor in weights.items():
                if name.startswith("encoder."):
                    encoder_params[name.removeprefix("encoder.")].copy_(tensor)
        self.head.load_state_dict({n.removeprefix("head."): t for n, t in weights.items() if n.startswith("head.")})

    # --- finishing ----------------------------------------------------------------------------------------

    def finish(self, out_dir: Path) -> dict[str, Any]:
        """Restore the best step, merge LoRA, choose alpha, score fully, save the encoder without its head."""
        started = time.monotonic()
        if self.best is not None:
            self._load_trained_weights(self.best_weights)
        if self.config.uses_lora:
            merge_lora(self.encoder)
        alpha, alpha_scores = self._choose_alpha()
        dev = self.evaluate(full=True)
        test = self.test_scores()
        base_p1 = None
        if self.config.eval_full_base:
            base = self.base if self.base is not None else self._frozen_base()
            base_p1 = self._retrieval(base, self.retrieval_dev)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(out_dir)
        for name in TOKENIZER_FILES:
            if (self.base_checkpoint / name).is_file():
                shutil.copyfile(self.base_checkpoint / name, out_dir / name)
        self.elapsed += time.monotonic() - started
        summary = self._summary(alpha, alpha_scores, dev, test, base_p1)
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
        self._log({"step": self.step, "eval": "final", "dev": dev, "test": test, "retrieval_base": base_p1})
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir / RESUME_DIR, ignore_errors=True)
        return summary

    def _choose_alpha(self) -> tuple[float, dict[str, float]]:
        """WiSE-FT: load each candidate interpolation, keep the best by the selection rule (ties: first)."""
        alphas = self.config.wise_alpha
        if alphas == (1.0,):
            return 1.0, {}
        if self.base is None:
            raise RuntimeError("WiSE-FT needs the frozen base, which was not loaded")
        base_state = self.base.state_dict()
        tuned = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        scores: dict[str, float] = {}
        best_alpha, best_score = alphas[0], -np.inf
        for alpha in alphas:
            self.encoder.load_state_dict(interpolate(base_state, tuned, alpha))
            result = self.evaluate()
            scores[f"{alpha:g}"] = result["selection"]
            self._log({"step": self.step, "eval": "wise", "alpha": alpha, **result})
            if result["selection"] > best_score:
                best_alpha, best_score = alpha, result["selection"]
        self.encoder.load_state_dict(interpolate(base_state, tuned, best_alpha))
        return best_alpha, scores

    def _summary(
        self,
        alpha: float,
        alpha_scores: dict[str, float],
        dev: dict[str, Any],
        test: dict[str, float],
        base_p1: dict[str, float] | None,
    ) -> dict[str, Any]:
        config = self.config
        start_eval = self.history[0] if self.history else None
        training = {
            "task": config.task,
            "base_checkpoint": str(self.base_checkpoint),
            "data": self.data_summary(),
            "lr_encoder": config.lr_encoder,
            "lr_head": config.lr_head,
            "steps": config.steps,
            "steps_done": self.step,
            "probe_steps": config.probe_steps,
            "probe_dev_sample": next((e["task"] for e in self.history if e.get("eval") == "probe"), None),
            "best_step": self.best["step"] if self.best else self.step,
            "stopped_early": self.stopped_early,
            "batch_size": config.batch_size,
            "max_length": config.max_length,
            "seed": config.seed,
            "train_layers": config.train_layers,
            "freeze_embeddings": config.freeze_embeddings,
            "lora_rank": config.lora_rank if config.uses_lora else None,
            "lora_alpha": config.lora_alpha if config.uses_lora else None,
            "retention_lambda": config.retention_lambda,
            "retention_loss": config.retention_loss,
            "wise_alpha": alpha,
            "wise_alpha_selection": alpha_scores,
            "pool_layer": self.pool_layer,
            "text_prefix": config.text_prefix,
            "selection_rule": SELECTION_RULE,
            "select_task_weight": config.select_task_weight,
            "trainable_params": sum(p.numel() for p in self.trainable),
            "device": self.runtime.describe(),
            "wall_time_s": round(self.elapsed, 1),
            "config": config.to_dict(),
        }
        scores = {
            "task": config.task,
            "metric": self.selection_metric(),
            "dev": dev["task"],
            "test": test,
            "retrieval_dev_langs": list(config.dev_retrieval_langs),
            "retrieval_dev_p1": dev["retrieval"]["mean"],
            "retrieval_dev_p1_by_lang": dev["retrieval"],
            "retrieval_dev_p1_base": base_p1["mean"] if base_p1 else None,
            "retrieval_dev_p1_base_by_lang": base_p1,
            "in_loop_base_sample": start_eval["retrieval"] if start_eval else None,
            "selection_at_best": self.best["selection"] if self.best else None,
        }
        return {"training": training, "scores": scores}

    # --- persistence --------------------------------------------------------------------------------------

    def save_state(self, path: Path) -> None:
        """Everything a resumed run needs; written to a temporary file and renamed, so a crash keeps the old one."""
        state = {
            "config": self.config.to_dict(),
            "base_checkpoint": str(self.base_checkpoint),
            "step": self.step,
            "probe_step": self.probe_step,
            "weights": self._trained_weights(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": json.dumps(self.history),
            "best": json.dumps(self.best),
            "best_weights": self.best_weights,
            "evals_since_best": self.evals_since_best,
            "stopped_early": self.stopped_early,
            "elapsed": self.elapsed,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, path)

    def load_state(self, path: Path) -> None:
        """Continue from `path`; refuses a state written by a different configuration or base."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved, current = state["config"], self.config.to_dict()
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        differing = [k for k in differing if k not in _RESUMABLE_DIFFERENCES]
        if differing or state["base_checkpoint"] != str(self.base_checkpoint):
            raise TrainConfigError(
                f"{path}: resume state is from a different run (config differs in {differing}, base "
                f"{state['base_checkpoint']}); use a new output folder or delete {path.parent}"
            )
        self._load_trained_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        self.probe_step = int(state.get("probe_step", 0))
        self.history = json.loads(state["history"])
        self.best = json.loads(state["best"])
        self.best_weights = state["best_weights"]
        self.evals_since_best = int(state["evals_since_best"])
        self.stopped_early = bool(state["stopped_early"])
        self.elapsed = float(state["elapsed"])
        self._truncate_log()

    def start_log(self) -> None:
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            (self.work_dir / LOG_FILE).write_text("", encoding="utf-8")

    def _truncate_log(self) -> None:
        """Drop log lines written after the resumed step by the interrupted run, so no step appears twice."""
        if self.work_dir is None or not (self.work_dir / LOG_FILE).is_file():
            return
        path = self.work_dir / LOG_FILE
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and json.loads(line).get("step", 0) <= self.step:
                kept.append(line)
        path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def _log(self, entry: dict[str, Any]) -> None:
        if self.work_dir is None:
            return
        with open(self.work_dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def shuffled_labels(examples: list[Example], kind: str, seed: int) -> list[Example]:
    """The control of `shuffle_labels`: every word label of the training set permuted across the whole set.

    Label frequencies, sentence lengths and which words are trained stay the same; what a label says about
    its word is gone, so a model trained on this learns no syntax from the task.
    """
    if kind != "tagging":
        raise TrainConfigError(f"shuffle_labels is a control for tagging tasks, not {kind!r} ones")
    words = word_examples(examples)
    pool = np.array([label for e in words for label in e.labels])
    np.random.default_rng([seed, 1]).shuffle(pool)
    out: list[Example] = []
    start = 0
    for example in words:
        end = start + len(example.labels)
        out.append(dataclasses.replace(example, labels=tuple(int(x) for x in pool[start:end])))
        start = end
    return out


def _pad_states(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """[batch, width, hidden] with each row's states at the front (right padding, as `features.pad`)."""
    out = torch.zeros((len(rows), width, rows[0].shape[-1]), dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        out[index, : row.shape[0]] = row
    return out


def train_on(
    config: TrainConfig,
    base_checkpoint: Path,
    out_dir: Path,
    task: TaskData[Any] | Sequence[TaskData[Any]],
    retrieval_dev: RetrievalDev,
    *,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on already-loaded data (tests pass small slices); resumes from `out_dir/resume` when present.

    `task` is one TaskData, or the list of sub-tasks (in `config.multi_tasks` order) for the `multi` task.
    Returns the training summary, or {"completed": False, "step": n} when paused by `stop_after`.
    """
    out_dir = Path(out_dir)
    trainer: Trainer
    if config.task == MULTI_TASK:
        from export.train.multitask import MultiTaskTrainer

        tasks = [task] if isinstance(task, TaskData) else list(task)
        trainer = MultiTaskTrainer(config, base_checkpoint, tasks, retrieval_dev, work_dir=out_dir, progress=progress)
    else:
        if not isinstance(task, TaskData):
            raise TrainConfigError(f"task {config.task!r} trains on one data set, got {len(task)}")
        trainer = Trainer(config, base_checkpoint, task, retrieval_dev, work_dir=out_dir, progress=progress)
    state = out_dir / RESUME_DIR / STATE_FILE
    if state.is_file():
        trainer.load_state(state)
    else:
        trainer.start_log()
    if not trainer.run(stop_after):
        return {"completed": False, "step": trainer.step, "resume_state": str(state)}
    return trainer.finish(out_dir)


def train_member(
    config: TrainConfig,
    base_checkpoint: Path,
    out_dir: Path,
    data_dir: str | Path | None = None,
    *,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `config.task` on the shared data and write `out_dir`: an HF encoder checkpoint (head dropped),
    its tokenizer, `training_summary.json` ({"training": knobs, "scores": ...} for member.json) and
    `train_log.jsonl`. Data problems fail before the model loads (DataFormatError / MissingDataError)."""
    task = load_training_data(config, data_dir)
    retrieval_dev = load_retrieval_dev(data_dir, config.dev_retrieval_langs)
    return train_on(config, base_checkpoint, out_dir, task, retrieval_dev, stop_after=stop_after, progress=progress)


def load_training_data(config: TrainConfig, data_dir: str | Path | None) -> TaskData[Any] | list[TaskData[Any]]:
    """The task's data, or every sub-task's (in `multi_tasks` order) for the `multi` task."""
    if config.task == MULTI_TASK:
        return [load_task(name, data_dir) for name in config.multi_tasks]
    return load_task(config.task, data_dir)
