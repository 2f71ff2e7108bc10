"""Skip-if-done bookkeeping: each step's identity is a hash of what determines its output.

A step's hash covers its own configuration, the hashes of the steps it reads (so a change ripples
downstream and nowhere else), the base checkpoint's fingerprint and CODE_VERSION. It is written to a
`.done.json` next to the step's output only after the step finished, and removed before the step
re-runs, so a crash never leaves a marker that vouches for half-written output. Hashing inputs rather
than outputs keeps re-runs cheap (no multi-hundred-MB checkpoint is re-read to decide to skip).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.repository import sha256_file, write_json_atomic

# Bump when a step's code changes what it writes, so every output made by older code is rebuilt.
CODE_VERSION = 1
DONE_FILE = ".done.json"


def step_hash(kind: str, payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of (kind, code version, payload)."""
    blob = json.dumps({"kind": kind, "code": CODE_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def checkpoint_fingerprint(folder: Path) -> str:
    """sha256 over the names and contents of a checkpoint folder's files (weights, config, tokenizer)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


@dataclass
class StepLog:
    """What one pipeline run did: steps executed and skipped, in order (tests read this, not timings)."""

    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verbose: bool = True

    def say(self, message: str) -> None:
        if self.verbose:
            print(f"[pipeline] {message}", flush=True)


def is_done(marker: Path, digest: str, output: Path) -> bool:
    """The marker exists, names this exact hash, and the output it vouches for is still there."""
    try:
        payload = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and payload.get("hash") == digest and output.exists()


def read_result(marker: Path) -> dict[str, Any]:
    payload = json.loads(marker.read_text(encoding="utf-8"))
    result = payload.get("result") or {}
    return result if isinstance(result, dict) else {}


def mark_done(marker: Path, name: str, digest: str, inputs: dict[str, Any], result: dict[str, Any]) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        marker,
        {
            "step": name,
            "hash": digest,
            "code_version": CODE_VERSION,
            "inputs": json.loads(json.dumps(inputs, default=str)),
            "result": result,
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
