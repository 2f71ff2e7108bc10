"""onnxruntime thread spinning and encoder-batch concurrency: carried into the session, settable from the
command line both ways, reported by /info, and without effect on the embeddings themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.__main__ import build_parser, main, settings_from_args
from service.config import CPU_BATCHING, CUDA_BATCHING, Batching, Settings, resolve_batching
from service.encoders import OnnxEncoder, load_encoders
from service.encoders.onnx import SPIN_INTER, SPIN_INTRA
from service.engine import Engine
from service.repository import load_repository

TEXTS = [f"sentence number {i} " + "word " * (i % 7) for i in range(24)]


@pytest.mark.parametrize("spinning", [False, True])
def test_session_carries_the_spinning_entries_and_runs(tiny_repo: Path, spinning: bool) -> None:
    member = load_repository(tiny_repo).members[0]
    enc = OnnxEncoder(member, device="cpu", intra_op_threads=2, spinning=spinning)
    live = enc._session.get_session_options()  # what the running session was built with
    expected = "1" if spinning else "0"
    assert live.get_session_config_entry(SPIN_INTRA) == expected
    assert live.get_session_config_entry(SPIN_INTER) == expected
    assert enc.spinning is spinning
    assert enc.describe()["ort_spinning"] is spinning
    enc.warmup()  # the session really runs with this configuration
    out = enc.forward(enc.tokenizer.encode(["Hello world."]))
    assert out.shape == (1, enc.dim) and np.isfinite(out).all()


def test_load_encoders_passes_spinning_to_every_member(tiny_repo: Path) -> None:
    repo = load_repository(tiny_repo)
    for spinning in (False, True):
        encoders = load_encoders(repo, device="cpu", threads=1, spinning=spinning)
        assert [e.describe()["ort_spinning"] for e in encoders] == [spinning] * len(repo.members)


def parse(*argv: str) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_disabled_optimizers_flag_reaches_every_member_and_embeddings_stay_put(tiny_repo: Path) -> None:
    assert parse().disabled_optimizers == ("SkipLayerNormFusion",)
    assert parse("--ort-disabled-optimizers", "A, B,").disabled_optimizers == ("A", "B")
    assert parse("--ort-disabled-optimizers", "").disabled_optimizers == ()
    repo = load_repository(tiny_repo)
    texts = ["Hello world.", "Wo ist der Bahnhof? " * 3]
    outs = []
    for disabled in ((), ("SkipLayerNormFusion",)):
        encoders = load_encoders(repo, device="cpu", threads=1, disabled_optimizers=disabled)
        assert [e.describe()["disabled_optimizers"] for e in encoders] == [list(disabled)] * len(encoders)
        outs.append(encoders[0].forward(encoders[0].tokenizer.encode(texts)))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_flags_are_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--ort-spinning", "--batcher-concurrency", "--search-max-wait-ms", "--search-concurrency"):
        assert flag in help_text
    assert "XRET_ORT_SPINNING" in help_text and "XRET_BATCHER_CONCURRENCY" in help_text


def test_spinning_flag_sets_both_ways_and_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XRET_ORT_SPINNING", raising=False)
    assert parse().ort_spinning is None  # unset: the service decides by the member count (resolve_spinning)
    assert parse("--ort-spinning").ort_spinning is True
    assert parse("--ort-spinning", "true").ort_spinning is True
    assert parse("--ort-spinning", "false").ort_spinning is False
    monkeypatch.setenv("XRET_ORT_SPINNING", "true")
    assert parse().ort_spinning is True
    assert parse("--ort-spinning", "false").ort_spinning is False
    assert parse("--ort-spinning=0", "--port", "9100").ort_spinning is False


def test_concurrency_flags_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XRET_BATCHER_CONCURRENCY", raising=False)
    assert parse().batcher_concurrency is None  # unset: the device decides (resolve_batching)
    settings = parse("--batcher-concurrency", "2", "--search-concurrency", "3", "--search-max-wait-ms", "0.5")
    assert (settings.batcher_concurrency, settings.search_concurrency, settings.search_max_wait_ms) == (2, 3, 0.5)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--batcher-concurrency", "0"], "batcher_concurrency"),
        (["--ort-spinning", "maybe"], "ort_spinning"),
        (["--search-concurrency", "0"], "search_concurrency"),
        (["--search-max-wait-ms", "-1"], "search_max_wait_ms"),
    ],
)
def test_bad_values_exit_2_naming_the_setting(argv: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and "Traceback" not in err[0]


def test_unset_batching_limits_follow_the_device_and_set_ones_win() -> None:
    unset = Settings(repo=Path("r"), index=Path("i"))
    assert resolve_batching(unset, on_cuda=False) == CPU_BATCHING == Batching(8192, 64, 1)
    assert resolve_batching(unset, on_cuda=True) == CUDA_BATCHING == Batching(32768, 256, 2)
    pinned = Settings(repo=Path("r"), index=Path("i"), max_batch_size=32, batcher_concurrency=1)
    assert resolve_batching(pinned, on_cuda=True) == Batching(32768, 32, 1)
    assert resolve_batching(Settings(repo=Path("r"), index=Path("i"), max_batch_tokens=64), False) == Batching(
        64, 64, 1
    )


def test_a_cpu_engine_reports_the_cpu_limits(tiny_repo: Path, tmp_path: Path) -> None:
    """On this machine (no CUDA) an engine with nothing set batches as CPU_BATCHING says, and /info shows it."""

    async def limits() -> dict[str, object]:
        engine = Engine(Settings(repo=tiny_repo, index=tmp_path / "index", cache_size=0, snapshot_interval_s=0))
        await engine.start()
        try:
            return engine.info()["members"][0]["runtime"]
        finally:
            await engine.stop()

    runtime = asyncio.run(limits())
    assert runtime["provider"] == "CPUExecutionProvider"
    assert (runtime["max_batch_tokens"], runtime["max_batch_size"], runtime["batcher_concurrency"]) == (8192, 64, 1)


async def embed_and_describe(tiny_repo: Path, index: Path, concurrency: int) -> tuple[np.ndarray, dict[str, object]]:
    settings = Settings(
        repo=tiny_repo,
        index=index,
        redis_url=None,
        cache_size=0,
        snapshot_interval_s=0,
        intra_op_threads=1,
        max_batch_size=1,  # every text alone: batch composition cannot differ between the two engines
        batcher_concurrency=concurrency,
    )
    engine = Engine(settings)
    await engine.start()
    try:
        results = await asyncio.gather(*(engine.embed([t]) for t in TEXTS))
        runtime = engine.info()["members"][0]["runtime"]
        batches = engine.metrics.registry.get_sample_value("xret_batch_texts_count")
        assert batches == len(TEXTS)
    finally:
        await engine.stop()
    return np.concatenate([r.vectors for r in results]), runtime


def test_batcher_concurrency_2_embeds_exactly_like_1_and_is_reported(tiny_repo: Path, tmp_path: Path) -> None:
    one, info_one = asyncio.run(embed_and_describe(tiny_repo, tmp_path / "i1", 1))
    two, info_two = asyncio.run(embed_and_describe(tiny_repo, tmp_path / "i2", 2))
    assert one.shape == (len(TEXTS), 64)
    np.testing.assert_array_equal(one, two)
    assert info_one["batcher_concurrency"] == 1 and info_two["batcher_concurrency"] == 2
    assert info_one["ort_spinning"] is False and info_one["intra_op_threads"] == 1


def test_unset_spinning_is_on_for_one_member_and_off_for_several(tiny_repo: Path, tmp_path: Path) -> None:
    """The default follows the member count (stop 15 measured one member spinning on 2 cores: faster at both
    loads; several members run their pools at once). Read back from the live sessions via `info()`."""
    from export.tiny import build_tiny_repository

    one = build_tiny_repository(tmp_path / "one", n_members=1)

    async def spinning(repo: Path, index: Path, ort_spinning: bool | None = None) -> list[bool]:
        settings = Settings(repo=repo, index=index, redis_url=None, snapshot_interval_s=0, ort_spinning=ort_spinning)
        engine = Engine(settings)
        await engine.start()
        try:
            return [m["runtime"]["ort_spinning"] for m in engine.info()["members"]]
        finally:
            await engine.stop()

    assert asyncio.run(spinning(one, tmp_path / "i1")) == [True]
    assert asyncio.run(spinning(tiny_repo, tmp_path / "i2")) == [False, False]
    assert asyncio.run(spinning(one, tmp_path / "i3", ort_spinning=False)) == [False]  # a setting always wins
    assert asyncio.run(spinning(tiny_repo, tmp_path / "i4", ort_spinning=True)) == [True, True]
