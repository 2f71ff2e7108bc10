"""`python -m benchmarks retrieval`: Tatoeba and BUCC zh-en (sample) for one or more systems.

Example (base model, XTREME-36, both tasks)::

    python -m benchmarks retrieval --system base=artifacts/repo

Does hubness rescoring help? Decide on the dev set (stsb-dev), never on the test sets::

    python -m benchmarks retrieval --system base=artifacts/repo --tasks stsb-dev tatoeba --rescore margin,csls

Compare systems by repeating `--system NAME=REPO_DIR`; the first (or `--baseline`) is what gains are
measured against. Heavy imports (engine, onnxruntime, matplotlib) wait until the command runs, so
`--help` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.retrieval.errors import BenchmarkError
from benchmarks.retrieval.tatoeba import LANGUAGE_SETS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
TASKS = ("tatoeba", "bucc", "stsb-dev")
DEFAULT_TASKS = ("tatoeba", "bucc")  # stsb-dev is the dev set: run it when a choice is to be made
RESCORE_CHOICES = ("none", "margin", "csls")


def add_parser(sub: Any) -> None:
    """Register the `retrieval` subcommand on the top-level `python -m benchmarks` parser."""
    from service.config import Settings

    p = sub.add_parser("retrieval", help="Tatoeba (XTREME protocol) and BUCC zh-en sample mining")
    p.add_argument(
        "--system",
        action="append",
        required=True,
        metavar="NAME=REPO_DIR",
        help=(
            "a model repository to benchmark under a name, as NAME=REPO_DIR[:MEMBER[*WEIGHT],...][@FUSION][~center] "
            "(~center: language-centred vectors); repeat to compare systems"
        ),
    )
    p.add_argument("--baseline", help="system that gains are measured against (default: the first)")
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=list(DEFAULT_TASKS),
        help="benchmarks to run (default: tatoeba bucc); stsb-dev is the stsb_multi_mt dev set (xx->en P@1)",
    )
    p.add_argument(
        "--rescore",
        default="none",
        metavar="METHODS",
        help=(
            "comma-separated hubness rescorings to score besides plain cosine, from the same vectors: "
            "none, margin, csls (Tatoeba and stsb-dev)"
        ),
    )
    p.add_argument(
        "--rescore-reference",
        type=Path,
        default=None,
        metavar="FILE",
        help=(
            "hubness reference (one sentence per line, `python -m export reference`): with --rescore, also score "
            "the service's rescoring with r_y over these sentences (`rescored_reference`)"
        ),
    )
    p.add_argument("--language-set", choices=LANGUAGE_SETS, default="xtreme36", help="Tatoeba language set")
    p.add_argument(
        "--languages",
        help="comma-separated subset of the set (ISO 639-3 or XTREME codes); narrows stsb-dev to those it has",
    )
    p.add_argument(
        "--max-sentences",
        type=int,
        help="quick runs only: first N Tatoeba pairs per language, N BUCC sentences per side (gold first)",
    )
    p.add_argument("--cv-folds", type=int, default=5, help="folds for the BUCC threshold cross-validation")
    p.add_argument("--seed", type=int, default=0, help="seed of the CV folds and the bootstrap")
    p.add_argument("--data-dir", type=Path, default=Settings.model_fields["data_dir"].default, help="shared data")
    p.add_argument("--cache-dir", type=Path, default=Path("artifacts/bench-cache"), help="embedding cache")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per member (0 = runtime default)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder for JSON, markdown and plots")
    p.add_argument("--name", default="retrieval", help="file name stem of the outputs")
    p.set_defaults(func=run)


def parse_systems(raw: list[str]) -> list[Any]:
    """`NAME=REPO_DIR[:MEMBERS][@FUSION][~center]` specs -> System list; names must be unique and file-name safe."""
    from benchmarks.retrieval.systems import System

    systems: list[System] = []
    for item in raw:
        name, eq, spec = item.partition("=")
        if not eq or not NAME_RE.match(name) or not spec:
            raise BenchmarkError(
                f"--system {item!r}: expected NAME=REPO_DIR[:MEMBER,MEMBER...][@FUSION][~center], "
                "NAME of letters, digits, _.+-"
            )
        if any(s.name == name for s in systems):
            raise BenchmarkError(f"--system {item!r}: the name {name!r} is used twice")
        systems.append(System.parse(name, spec))
    return systems


def parse_rescore(raw: str) -> list[str]:
    """`--rescore a,b` -> the methods to score besides plain cosine, in a fixed order ("none" adds nothing)."""
    given = [m.strip() for m in raw.split(",") if m.strip()]
    unknown = [m for m in given if m not in RESCORE_CHOICES]
    if unknown or not given:
        raise BenchmarkError(f"--rescore {raw!r}: expected a comma-separated list of {', '.join(RESCORE_CHOICES)}")
    return [m for m in RESCORE_CHOICES if m in given and m != "none"]


def stsb_languages(languages: list[Any], only: list[str] | None) -> list[str]:
    """All stsb-dev languages, or (with --languages) those of the chosen Tatoeba languages it has."""
    from benchmarks.retrieval.stsb_dev import LANGUAGES

    if only is None:
        return list(LANGUAGES)
    chosen = [lang.xtreme_code for lang in languages if lang.xtreme_code in LANGUAGES]
    if not chosen:
        raise BenchmarkError(
            f"--languages {','.join(only)}: none of them is an stsb-dev language ({', '.join(LANGUAGES)})"
        )
    return chosen


def _check_args(args: argparse.Namespace, names: list[str]) -> str:
    if args.max_sentences is not None and args.max_sentences < 2:
        raise BenchmarkError(f"--max-sentences must be at least 2, got {args.max_sentences}")
    if args.cv_folds < 2:
        raise BenchmarkError(f"--cv-folds must be at least 2, got {args.cv_folds}")
    if args.threads < 0:
        raise BenchmarkError(f"--threads must be 0 (runtime default) or more, got {args.threads}")
    baseline: str = args.baseline or names[0]
    if baseline not in names:
        raise BenchmarkError(f"--baseline {baseline!r} is not one of the systems {', '.join(names)}")
    return baseline


def run(args: argparse.Namespace) -> int:
    """Run, write the report, print where it went; bad input is one line on stderr and exit code 2."""
    from service.errors import StartupError, XretError

    try:
        return _run(args)
    except BenchmarkError as exc:
        print(f"benchmarks retrieval: {exc}", file=sys.stderr)
        return 2
    except (StartupError, XretError) as exc:
        print(f"benchmarks retrieval: cannot embed: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from benchmarks.retrieval import tatoeba
    from benchmarks.retrieval.report import write_report
    from benchmarks.retrieval.runner import RunConfig, run_benchmarks

    systems = parse_systems(args.system)
    baseline = _check_args(args, [s.name for s in systems])
    rescore = parse_rescore(args.rescore)
    if args.rescore_reference is not None and not rescore:
        raise BenchmarkError("--rescore-reference is used by rescoring only: add --rescore margin (or csls)")
    only = [c.strip() for c in args.languages.split(",") if c.strip()] if args.languages else None
    languages = tatoeba.select_languages(tatoeba.read_languages(args.data_dir), args.language_set, only)
    dev_languages = stsb_languages(languages, only) if "stsb-dev" in args.tasks else []
    cfg = RunConfig(
        data_dir=args.data_dir,
        languages=languages,
        language_set=args.language_set if only is None else f"{args.language_set} subset",
        tasks=[t for t in TASKS if t in args.tasks],
        max_sentences=args.max_sentences,
        cache_dir=None if args.no_cache else args.cache_dir,
        cv_folds=args.cv_folds,
        seed=args.seed,
        threads=args.threads,
        rescore=rescore,
        rescore_reference=args.rescore_reference,
        stsb_languages=dev_languages,
    )
    started = time.perf_counter()
    results = asyncio.run(run_benchmarks(systems, cfg, baseline))
    paths = write_report(results, args.out, args.name)
    print(f"retrieval benchmark done in {time.perf_counter() - started:.0f} s")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0
