"""`python -m service serve ...`: run REST and gRPC on one engine.

Flags are generated from `Settings`, so every option has exactly one name, one default and one
description, whether it comes from the command line or from the environment (flags win).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from pydantic import ValidationError

from service.config import Settings
from service.errors import StartupError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description="xret retrieval service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve REST and gRPC on one engine")
    for name, field in Settings.model_fields.items():
        env = "REDIS_URL" if name == "redis_url" else f"XRET_{name.upper()}"
        flag = f"--{name.replace('_', '-')}"
        help_text = f"{field.description} [env {env}; default {field.default}]"
        if field.annotation in (bool, bool | None):  # None: unset, the service decides
            # `--flag` alone turns it on; `--flag false` turns off what the environment turned on.
            serve.add_argument(
                flag, dest=name, default=None, nargs="?", const="true", metavar="true|false", help=help_text
            )
        else:
            serve.add_argument(flag, dest=name, default=None, help=help_text)
    serve.add_argument("--log-level", default="info", help="logging level (info, warning, debug)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags given on the command line override env vars; unset flags leave env/defaults alone."""
    given: dict[str, Any] = {
        name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    return Settings(**given)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"xret: bad settings: {problems}", file=sys.stderr)
        return 2
    from service.server import run_servers  # after settings, so `--help` stays fast

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_servers(
            settings,
            stop,
            lambda rest, grpc: print(
                f"xret ready: REST http://{settings.host}:{rest}  gRPC {settings.host}:{grpc}", flush=True
            ),
        )

    try:
        asyncio.run(run())
    except StartupError as exc:
        print(f"xret: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
