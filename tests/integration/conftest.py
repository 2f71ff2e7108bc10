"""Real servers on localhost for integration tests: the same `run_servers` that `serve` runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.server import RunningService, serve_in_thread


def running_service(**overrides: Any) -> AbstractContextManager[RunningService]:
    """REST + gRPC on free ports; keyword args override settings."""
    return serve_in_thread(Settings(port=0, grpc_port=0, **overrides), timeout_s=120)


@pytest.fixture
def service_factory(tiny_repo: Path, tmp_path: Path) -> Callable[..., AbstractContextManager[RunningService]]:
    """Start a service on the tiny repository with a fresh index; keyword args override settings."""

    def factory(**overrides: Any) -> AbstractContextManager[RunningService]:
        overrides.setdefault("repo", tiny_repo)
        overrides.setdefault("index", tmp_path / "index")
        return running_service(**overrides)

    return factory


@pytest.fixture
def live(service_factory: Callable[..., AbstractContextManager[RunningService]]) -> Iterator[RunningService]:
    """A default service (in-process cache, no API key) for the duration of one test."""
    with service_factory() as svc:
        yield svc
