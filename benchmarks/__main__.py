"""`python -m benchmarks <subcommand>`: quality and load benchmarks of xret.

Each subcommand lives in its own package and registers itself through `add_parser(subparsers)`, which
sets `func` (args -> exit code); adding a benchmark means adding one line to `SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.load import cli as load_cli
from benchmarks.retrieval import cli as retrieval_cli

SUBCOMMANDS = (retrieval_cli, load_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="xret benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
