"""Servers under test as separate processes: xret (`python -m service serve`) and peers.

A separate process per server keeps the load generator's event loop and the server's from sharing
one GIL, which would make every server look slower by the client's own cost. Each server is
started, waited for (readiness URL), and stopped with SIGTERM (SIGKILL after a grace period) on
exit from the `with` block, also when the benchmark fails, so no server outlives its run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 30.0


class ServerFailed(RuntimeError):
    """A server under test exited or never became ready; the message holds its log's tail."""


@dataclass(frozen=True)
class Endpoint:
    """Where a started server listens; `grpc` is empty for servers without gRPC."""

    rest: str
    grpc: str
    pid: int
    log: Path


def free_port() -> int:
    """A port free right now on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"server exited with code {proc.returncode} before it was ready:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ServerFailed(f"server not ready at {url} within {timeout_s:.0f} s:\n{_tail(log)}")


@contextmanager
def managed_process(
    command: Sequence[str],
    ready_url: str,
    log: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
) -> Iterator[int]:
    """Run `command` until the block ends; yields its pid once `ready_url` answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(command), cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(proc, ready_url, timeout_s, log)
            yield proc.pid
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def xret_server(
    repo: Path, index: Path, log: Path, settings: dict[str, str] | None = None, timeout_s: float = 600.0
) -> Iterator[Endpoint]:
    """`python -m service serve` on free ports; `settings` are extra flags (`{"cache_size": "0"}`)."""
    rest, grpc = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--repo",
        str(repo),
        "--index",
        str(index),
        "--port",
        str(rest),
        "--grpc-port",
        str(grpc),
        "--log-level",
        "warning",
    ]
    for name, value in (settings or {}).items():
        command += [f"--{name.replace('_', '-')}", value]
    base = f"http://127.0.0.1:{rest}"
    with managed_process(command, base + "/readyz", log, cwd=ROOT, timeout_s=timeout_s) as pid:
        yield Endpoint(rest=base, grpc=f"127.0.0.1:{grpc}", pid=pid, log=log)


@contextmanager
def infinity_server(
    infinity_bin: Path, model_dir: Path, log: Path, batch_size: int = 32, timeout_s: float = 600.0
) -> Iterator[Endpoint]:
    """infinity-emb's optimum (ONNX Runtime) engine on CPU, started from the model folder.

    `--model-id .` from inside the folder makes infinity take the local files (no hub); its own
    warm-up is off because it sends 514 tokens, past XLM-R's 512 positions.
    """
    port = free_port()
    command = [
        str(infinity_bin),
        "v2",
        "--model-id",
        ".",
        "--engine",
        "optimum",
        "--device",
        "cpu",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--batch-size",
        str(batch_size),
        "--no-model-warmup",
        "--log-level",
        "warning",
    ]
    base = f"http://127.0.0.1:{port}"
    env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    with managed_process(command, base + "/health", log, cwd=model_dir, env=env, timeout_s=timeout_s) as pid:
        yield Endpoint(rest=base, grpc="", pid=pid, log=log)
