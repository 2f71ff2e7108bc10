"""The repository contract: a valid repository loads, and each way to break one is refused by name."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from export.__main__ import main as export_main
from export.repository_writer import write_ensemble
from service.repository import RepositoryError, load_repository


@pytest.fixture
def repo(tiny_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny repository, free to break."""
    return Path(shutil.copytree(tiny_repo, tmp_path / "repo"))


def _edit_json(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def test_tiny_repository_loads(tiny_repo: Path) -> None:
    loaded = load_repository(tiny_repo)
    assert loaded.ensemble.members == ["tiny0", "tiny1"]
    assert loaded.ensemble.fusion.method == "concat"
    assert loaded.ensemble.dim == 64 == sum(m.spec.dim for m in loaded.members)
    assert [m.spec.layer for m in loaded.members] == [1, 2]
    assert len({m.spec.tokenizer_sha256 for m in loaded.members}) == 1, "tiny members must share a tokenizer"
    assert len({m.spec.onnx_sha256 for m in loaded.members}) == 2
    assert {"torch", "transformers", "onnx", "onnxruntime", "xret"} <= set(loaded.ensemble.tool_versions)
    created = dt.datetime.fromisoformat(loaded.ensemble.created_at)
    assert created.utcoffset() == dt.timedelta(0)


def test_fingerprint_follows_the_weights(repo: Path) -> None:
    before = load_repository(repo).fingerprint
    _edit_json(repo / "ensemble.json", lambda p: p["fusion"].update(weights=[1.0, 2.0]))
    assert load_repository(repo).fingerprint != before


@pytest.mark.parametrize(
    "relative",
    [
        "ensemble.json",
        "members/tiny1/member.json",
        "members/tiny1/model.onnx",
        "members/tiny0/tokenizer.json",
    ],
)
def test_missing_file(repo: Path, relative: str) -> None:
    (repo / relative).unlink()
    with pytest.raises(RepositoryError, match=rf"{relative}: file missing"):
        load_repository(repo)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="model repository folder does not exist"):
        load_repository(tmp_path / "absent")


@pytest.mark.parametrize("relative", ["members/tiny0/model.onnx", "members/tiny1/tokenizer.json"])
def test_tampered_file_fails_its_sha256(repo: Path, relative: str) -> None:
    with open(repo / relative, "ab") as handle:
        handle.write(b" ")
    with pytest.raises(RepositoryError, match=rf"{relative}: sha256 does not match member.json"):
        load_repository(repo)
    assert load_repository(repo, verify_hashes=False).ensemble.dim == 64


def test_wrong_ensemble_dim(repo: Path) -> None:
    _edit_json(repo / "ensemble.json", lambda p: p.update(dim=63))
    with pytest.raises(RepositoryError, match=r"dim 63 but fusion 'concat' of member dims \[32, 32\] gives 64"):
        load_repository(repo)


def test_member_dim_must_be_positive(repo: Path) -> None:
    _edit_json(repo / "members/tiny0/member.json", lambda p: p.update(dim=0))
    with pytest.raises(RepositoryError, match=r"tiny0/member.json: dim must be a positive integer"):
        load_repository(repo)


def test_fusion_weights_count(repo: Path) -> None:
    _edit_json(repo / "ensemble.json", lambda p: p["fusion"].update(weights=[1.0]))
    with pytest.raises(RepositoryError, match="1 fusion weights for 2 members"):
        load_repository(repo)


@pytest.mark.parametrize("weights", [[float("nan"), 1.0], [float("inf"), 1.0], [0.0, 0.0], [True, 1.0], [-1.0, 2.0]])
def test_fusion_weights_must_be_finite_non_negative_numbers(repo: Path, weights: list[Any]) -> None:
    """Python's json reads NaN and Infinity; a NaN weight passed the old `w < 0` / `sum <= 0` checks."""
    _edit_json(repo / "ensemble.json", lambda p: p["fusion"].update(weights=weights))
    with pytest.raises(RepositoryError, match="fusion weights must be finite, non-negative and not all zero"):
        load_repository(repo)


def test_unknown_fusion_method(repo: Path) -> None:
    _edit_json(repo / "ensemble.json", lambda p: p["fusion"].update(method="max"))
    with pytest.raises(RepositoryError, match="fusion method 'max' not in"):
        load_repository(repo)


def test_unknown_schema_version(repo: Path) -> None:
    _edit_json(repo / "ensemble.json", lambda p: p.update(schema_version=2))
    with pytest.raises(RepositoryError, match="schema_version 2, this service reads 1"):
        load_repository(repo)


@pytest.mark.parametrize("relative", ["ensemble.json", "members/tiny1/member.json"])
def test_malformed_json(repo: Path, relative: str) -> None:
    (repo / relative).write_text('{"members": ["tiny0",')
    with pytest.raises(RepositoryError, match=rf"{relative}: not valid JSON"):
        load_repository(repo)


def test_member_json_problems_are_named(repo: Path) -> None:
    member_json = repo / "members/tiny1/member.json"
    _edit_json(member_json, lambda p: p.update(colour="blue"))
    with pytest.raises(RepositoryError, match=r"tiny1/member.json: unknown field\(s\) colour"):
        load_repository(repo)
    _edit_json(member_json, lambda p: (p.pop("colour"), p.pop("onnx_sha256")))
    with pytest.raises(RepositoryError, match=r"tiny1/member.json: missing field\(s\) onnx_sha256"):
        load_repository(repo)


def test_member_name_must_match_its_folder(repo: Path) -> None:
    _edit_json(repo / "members/tiny1/member.json", lambda p: p.update(name="other"))
    with pytest.raises(RepositoryError, match=r"name 'other' but ensemble\.json lists 'tiny1'"):
        load_repository(repo)


def test_writer_computes_dim_and_validates(repo: Path) -> None:
    spec = write_ensemble(repo, ["tiny1", "tiny0"], method="mean", weights=[3.0, 1.0])
    loaded = load_repository(repo)
    assert spec.dim == loaded.ensemble.dim == 32
    assert loaded.ensemble.members == ["tiny1", "tiny0"]
    assert loaded.ensemble.fusion.weights == [3.0, 1.0]


def test_writer_refuses_bad_ensembles_without_touching_the_file(repo: Path) -> None:
    before = (repo / "ensemble.json").read_bytes()
    with pytest.raises(RepositoryError, match="3 fusion weights for 2 members"):
        write_ensemble(repo, ["tiny0", "tiny1"], weights=[1.0, 1.0, 1.0])
    with pytest.raises(RepositoryError, match=r"members/ghost/member.json: file missing \(export member 'ghost'"):
        write_ensemble(repo, ["tiny0", "ghost"])
    assert (repo / "ensemble.json").read_bytes() == before


def test_writer_validates_members_on_disk(repo: Path) -> None:
    with open(repo / "members/tiny0/model.onnx", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(RepositoryError, match="sha256 does not match"):
        write_ensemble(repo, ["tiny0", "tiny1"])


def test_cli_ensemble(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_main(["ensemble", "--repo", str(repo), "--members", "tiny0", "--fusion", "concat"]) == 0
    assert load_repository(repo).ensemble.dim == 32
    assert export_main(["ensemble", "--repo", str(repo), "--members", "tiny0,tiny1", "--weights", "1,x"]) == 1
    assert "error: --weights must be comma-separated numbers, got '1,x'" in capsys.readouterr().err
