"""Every setting is a flag and an env var; flags win; bad values are refused with a clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.__main__ import build_parser, main, settings_from_args
from service.config import Settings


def test_every_setting_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in help_text


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRET_MAX_K", "7")
    monkeypatch.setenv("XRET_PORT", "9000")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    settings = settings_from_args(build_parser().parse_args(["serve", "--port", "9100"]))
    assert settings.max_k == 7
    assert settings.port == 9100
    assert settings.redis_url == "redis://127.0.0.1:6379/3"


def test_bad_setting_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "not-a-port"]) == 2
    err = capsys.readouterr().err
    assert "port" in err and "Traceback" not in err


def test_missing_repository_exits_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--repo", str(tmp_path / "nope"), "--index", str(tmp_path / "idx"), "--port", "0"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model repository folder does not exist" in err[0]
