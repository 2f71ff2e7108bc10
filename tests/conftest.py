"""Shared fixtures: a real (tiny, random) encoder checkpoint and a real model repository built from it.

Both are built once per test session (about 10 s) because exporting to ONNX is the slow part; tests must
treat them as read-only and copy the repository (`shutil.copytree`) before tampering with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF checkpoint folder (random 2-layer XLMRobertaModel + trained fast tokenizer), seed 0."""
    from export.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"), seed=0)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid repository: tiny0 (layer 1) and tiny1 (layer 2), shared tokenizer, concat fusion, dim 64."""
    from export.tiny import build_tiny_repository

    return build_tiny_repository(tmp_path_factory.mktemp("tiny_repo"), n_members=2)
