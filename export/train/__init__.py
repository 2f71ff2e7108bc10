"""Intermediate-task training: one encoder per task, head dropped, retrieval geometry watched throughout.

Entry points: `train_member` (train on the shared data and write an HF checkpoint + training_summary.json),
`TrainConfig` (every knob), `soup` / `interpolate` (weight-space combinations), and `python -m
export.train.cli`. Importing this package pulls in torch; `export.tasks` stays importable without it.
"""

from export.train.config import TrainConfig, TrainConfigError
from export.train.loop import SUMMARY_FILE, Trainer, train_member, train_on
from export.train.wise import WeightSpaceError, interpolate, soup, soup_state_dicts

__all__ = [
    "SUMMARY_FILE",
    "TrainConfig",
    "TrainConfigError",
    "Trainer",
    "WeightSpaceError",
    "interpolate",
    "soup",
    "soup_state_dicts",
    "train_member",
    "train_on",
]
