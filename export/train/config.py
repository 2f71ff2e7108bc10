"""TrainConfig: every knob of one intermediate-task training run, validated before any model is loaded.

One flat dataclass because the knobs travel three ways: CLI flags (generated from the fields and their
`help` metadata, see cli.py), the pipeline's YAML, and `member.json` `training` (via `to_dict`). A typo
or an impossible value must fail here with the knob named, not twenty minutes into a run.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from export.tasks import TASKS
from export.tasks.retrieval_dev import RETRIEVAL_LANGS

TRAIN_LAYER_CHOICES = ("all", "top:N", "lora")
RETENTION_LOSSES = ("cos", "mse")
# `multi`: one encoder trained on several tasks at once, one head each (see multitask.py).
MULTI_TASK = "multi"
MULTI_SAMPLING = ("sqrt", "uniform")
SYNTACTIC_TASKS = ("upos", "deps", "chunk", "ccg", "xpos")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
_TOP_LAYERS = re.compile(r"top:([1-9][0-9]*)")


class TrainConfigError(ValueError):
    """A training knob has an impossible value; the message names the knob and what it accepts."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Knobs of one run. Defaults fit e5-small on 2 CPU cores (about 20 minutes per task at 1,000 steps)."""

    task: str = field(metadata=_help(f"intermediate task: one of {', '.join(TASKS)}, or {MULTI_TASK!r}"))
    lr_encoder: float = field(default=2e-5, metadata=_help("peak learning rate of the encoder"))
    lr_head: float = field(default=1e-3, metadata=_help("peak learning rate of the task head"))
    steps: int = field(default=1000, metadata=_help("optimizer steps (the schedule's length)"))
    batch_size: int = field(default=16, metadata=_help("sentences (or pairs) per step"))
    max_length: int = field(default=128, metadata=_help("training truncation in tokens, prefix included"))
    seed: int = field(default=0, metadata=_help("seeds weights of the head/LoRA, dropout and data order"))
    probe_steps: int = field(
        default=0,
        metadata=_help(
            "head-only steps on the frozen encoder before joint training (LP-FT, Kumar et al. 2022): a trained "
            "head sends smaller, task-shaped gradients into the encoder than a random one, so features move less"
        ),
    )
    shuffle_labels: bool = field(
        default=False,
        metadata=_help(
            "control run: shuffle word labels across the training set (same label counts, no relation to the "
            "words), to tell what the task's syntax adds from what the fine-tuning itself does (tagging only)"
        ),
    )
    warmup: float = field(default=0.06, metadata=_help("linear warm-up as a fraction of steps, then linear decay"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay (not on biases/LayerNorm)"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm over all trained weights"))
    train_layers: str = field(
        default="all", metadata=_help("'all', 'top:N' (only the N highest layers) or 'lora' (adapters only)")
    )
    freeze_embeddings: bool = field(
        default=True,
        metadata=_help(
            "keep the token embeddings fixed: English-only training would move English token vectors away "
            "from the untouched vectors of every other language"
        ),
    )
    lora_rank: int = field(default=8, metadata=_help("LoRA rank (train_layers=lora)"))
    lora_alpha: float = field(default=16.0, metadata=_help("LoRA scale numerator: update = alpha/rank * B A"))
    multi_tasks: tuple[str, ...] = field(
        default=SYNTACTIC_TASKS, metadata=_help(f"task={MULTI_TASK}: the tasks trained together, one head each")
    )
    multi_sampling: str = field(
        default="sqrt",
        metadata=_help(
            f"task={MULTI_TASK}: each step trains one task, drawn with probability proportional to "
            "sqrt(train size) ('sqrt': big treebanks lead without drowning CCG) or 'uniform'"
        ),
    )
    retention_lambda: float = field(default=0.0, metadata=_help("weight of the embedding-retention loss (0 = off)"))
    retention_loss: str = field(
        default="cos", metadata=_help("'cos' (1 - cosine) or 'mse' between pooled embeddings and the base's")
    )
    wise_alpha: tuple[float, ...] = field(
        default=(1.0,),
        metadata=_help("WiSE-FT: weights = (1-a) base + a tuned; several values = pick by the selection rule"),
    )
    pool_layer: int = field(
        default=-1,
        metadata=_help("layer the member pools (hidden_states index, -1 = last); layers above are dropped"),
    )
    text_prefix: str = field(default="query: ", metadata=_help("prefix the member puts before every text"))
    eval_every: int = field(default=100, metadata=_help("steps between in-loop evaluations"))
    eval_task_sample: int = field(default=500, metadata=_help("dev records scored in-loop (full dev at the end)"))
    eval_retrieval_sample: int = field(
        default=200, metadata=_help("retrieval pairs per language in-loop (full dev at the end)")
    )
    eval_max_length: int = field(default=256, metadata=_help("truncation for evaluation (capped by the model)"))
    dev_retrieval_langs: tuple[str, ...] = field(
        default=("de", "es", "ja", "ru", "zh"), metadata=_help("stsb_multi_mt dev languages for xx->en P@1")
    )
    select_task_weight: float = field(
        default=0.5,
        metadata=_help("selection score = (1-w) * retrieval dev P@1 + w * task dev score (best step, alpha)"),
    )
    patience: int = field(
        default=0, metadata=_help("stop after this many evaluations without a better score (0 = never)")
    )
    eval_full_base: bool = field(
        default=True, metadata=_help("also score the untouched base on the full retrieval dev set at the end")
    )
    device: str = field(default="auto", metadata=_help("'auto' (CUDA when present), 'cpu' or 'cuda'"))
    precision: str = field(
        default="auto", metadata=_help("'auto' (bf16 autocast on CUDA if supported), 'fp32' or 'bf16'")
    )

    def __post_init__(self) -> None:
        self.wise_alpha = tuple(float(a) for a in _as_sequence(self.wise_alpha, "wise_alpha"))
        self.dev_retrieval_langs = tuple(str(x) for x in _as_sequence(self.dev_retrieval_langs, "dev_retrieval_langs"))
        self.multi_tasks = tuple(str(x) for x in _as_sequence(self.multi_tasks, "multi_tasks"))
        self._validate()

    @property
    def top_layers(self) -> int | None:
        """N of 'top:N', else None."""
        match = _TOP_LAYERS.fullmatch(self.train_layers)
        return int(match.group(1)) if match else None

    @property
    def uses_lora(self) -> bool:
        return self.train_layers == "lora"

    def warmup_steps(self) -> int:
        return math.ceil(self.warmup * self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TrainConfig:
        """Build from YAML/JSON; an unknown key is an error (a misspelt knob would otherwise be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise TrainConfigError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        if "task" not in payload:
            raise TrainConfigError("training option 'task' is required")
        return cls(**payload)

    def _validate(self) -> None:
        if self.task not in TASKS and self.task != MULTI_TASK:
            raise TrainConfigError(f"task {self.task!r} unknown; known tasks: {', '.join(TASKS)}, {MULTI_TASK}")
        unknown_tasks = [name for name in self.multi_tasks if name not in TASKS]
        if not self.multi_tasks or unknown_tasks or len(set(self.multi_tasks)) != len(self.multi_tasks):
            raise TrainConfigError(
                f"multi_tasks {list(self.multi_tasks)} must be distinct names from {', '.join(TASKS)}"
            )
        _check("multi_sampling", self.multi_sampling, lambda v: v in MULTI_SAMPLING, f"one of {MULTI_SAMPLING}")
        for name in ("lr_encoder", "lr_head"):
            _check(name, getattr(self, name), lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")
        for name in ("steps", "batch_size", "max_length", "eval_every", "eval_task_sample", "eval_max_length"):
            _check(name, getattr(self, name), lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
        if self.shuffle_labels and self.task == MULTI_TASK:
            raise TrainConfigError(f"shuffle_labels is a control for one tagging task, not for {MULTI_TASK!r}")
        _check("probe_steps", self.probe_steps, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
        _check("eval_retrieval_sample", self.eval_retrieval_sample, lambda v: isinstance(v, int) and v >= 2, ">= 2")
        _check("warmup", self.warmup, lambda v: 0 <= v < 1, "a fraction in [0, 1)")
        _check("weight_decay", self.weight_decay, lambda v: v >= 0, ">= 0")
        _check("max_grad_norm", self.max_grad_norm, lambda v: v > 0, "> 0")
        if self.train_layers not in ("all", "lora") and self.top_layers is None:
            raise TrainConfigError(
                f"train_layers {self.train_layers!r} must be one of {TRAIN_LAYER_CHOICES} (N a positive integer)"
            )
        _check("lora_rank", self.lora_rank, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
        _check("lora_alpha", self.lora_alpha, lambda v: v > 0, "> 0")
        _check("retention_lambda", self.retention_lambda, lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")
        _check("retention_loss", self.retention_loss, lambda v: v in RETENTION_LOSSES, f"one of {RETENTION_LOSSES}")
        if not self.wise_alpha or not all(0.0 <= a <= 1.0 for a in self.wise_alpha):
            raise TrainConfigError(f"wise_alpha {list(self.wise_alpha)} must be one or more values in [0, 1]")
        if self.text_prefix and not self.text_prefix[-1].isspace():
            raise TrainConfigError(
                f"text_prefix {self.text_prefix!r} must be empty or end with a space: word labels are aligned "
                "on whitespace-separated words, so the prefix cannot be glued to the first word"
            )
        unknown_langs = [lang for lang in self.dev_retrieval_langs if lang not in RETRIEVAL_LANGS]
        if not self.dev_retrieval_langs or unknown_langs:
            raise TrainConfigError(
                f"dev_retrieval_langs {list(self.dev_retrieval_langs)} must be a non-empty subset of {RETRIEVAL_LANGS}"
            )
        _check("select_task_weight", self.select_task_weight, lambda v: 0 <= v <= 1, "in [0, 1]")
        _check("patience", self.patience, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
        _check("device", self.device, lambda v: v in DEVICES, f"one of {DEVICES}")
        _check("precision", self.precision, lambda v: v in PRECISIONS, f"one of {PRECISIONS}")


def _as_sequence(value: Any, name: str) -> tuple[Any, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (int, float)):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise TrainConfigError(f"{name} must be a value or a list, got {value!r}") from None


def _check(name: str, value: Any, ok: Any, expected: str) -> None:
    try:
        valid = bool(ok(value))
    except TypeError:
        valid = False
    if not valid:
        raise TrainConfigError(f"{name} = {value!r}; expected {expected}")
