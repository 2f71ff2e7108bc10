"""The REST contract cannot drift silently: app.openapi() must equal the committed snapshot.

The app is built over an engine that is never started (building it loads nothing), so this runs in
well under a second. After an intended API change, regenerate the snapshot and commit it:
    XRET_UPDATE_SNAPSHOT=1 .venv/bin/pytest tests/unit/test_openapi_snapshot.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.config import Settings
from service.engine import Engine
from service.rest.app import create_app

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")
UPDATE_HINT = "XRET_UPDATE_SNAPSHOT=1 .venv/bin/pytest tests/unit/test_openapi_snapshot.py"


def current_openapi() -> dict[str, Any]:
    """The document as JSON would carry it (tuples become lists, keys strings)."""
    app = create_app(Engine(Settings.model_validate({"repo": "never-loaded", "index": "never-opened"})))
    document: dict[str, Any] = json.loads(json.dumps(app.openapi()))
    return document


def differences(old: Any, new: Any, path: str = "") -> Iterator[str]:
    """JSON paths where two documents differ, so a failure says what changed rather than just "differs"."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            where = f"{path}/{key}"
            if key not in new:
                yield f"removed {where}"
            elif key not in old:
                yield f"added {where}"
            else:
                yield from differences(old[key], new[key], where)
    elif old != new:
        yield f"changed {path or '/'}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}"


def test_openapi_matches_snapshot() -> None:
    document = current_openapi()
    if os.environ.get("XRET_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert SNAPSHOT.exists(), f"no OpenAPI snapshot at {SNAPSHOT}; create it with: {UPDATE_HINT}"
    committed = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    changes = list(differences(committed, document))
    assert not changes, (
        "The REST API (OpenAPI document) differs from the committed snapshot:\n  "
        + "\n  ".join(changes[:30])
        + f"\nIf the change is intended, update the snapshot and commit it: {UPDATE_HINT}"
    )


def test_snapshot_documents_every_endpoint() -> None:
    """Guards the snapshot itself: a regenerated file that lost a route would otherwise pass silently."""
    committed = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    operations = {(path, method) for path, item in committed["paths"].items() for method in item}
    assert operations == {
        ("/search", "post"),
        ("/embed", "post"),
        ("/v1/embeddings", "post"),
        ("/sentences", "post"),
        ("/sentences", "delete"),
        ("/sentences/{sentence_id}", "delete"),
        ("/sentences/{sentence_id}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/models", "get"),
        ("/stats", "get"),
        ("/info", "get"),
        ("/metrics", "get"),
    }
    assert committed["info"]["title"] == "xret"
