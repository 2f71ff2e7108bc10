"""The load tool end to end against a real service (tiny repository): REST and gRPC, JSON out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from benchmarks.load.cli import main
from benchmarks.load.server_metrics import parse_metrics

if TYPE_CHECKING:  # tests/integration is not a package; only mypy needs the type
    from benchmarks.load.scenarios import Setup
    from tests.integration.conftest import RunningService

RUN_KEYS = {
    "system",
    "mode",
    "concurrency",
    "texts_per_request",
    "requests",
    "ok",
    "errors",
    "elapsed_s",
    "throughput_rps",
    "texts_per_s",
    "latency_ms",
    "send_lag_ms",
    "server",
}


@pytest.fixture
def tatoeba(tmp_path: Path) -> Path:
    """A small multilingual slice in the Tatoeba file layout (the tool reads only that layout)."""
    folder = tmp_path / "tatoeba"
    folder.mkdir()
    for lang, lines in {
        "deu": ["Der Zug fährt um neun.", "Die Katze schläft.", "Es regnet in den Bergen."],
        "fra": ["Le train part à neuf heures.", "Le chat dort.", "Il pleut en montagne."],
        "jpn": ["電車は九時に出ます。", "猫が寝ています。"],
    }.items():
        (folder / f"tatoeba.{lang}-eng.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("target", "texts_per_request", "http_client"),
    [
        ("rest-embed", 1, "aiohttp"),
        ("rest-embed", 1, "httpx"),
        ("grpc-embed", 3, "aiohttp"),
        ("rest-search", 2, "aiohttp"),
        ("rest-search", 2, "httpx"),
        ("grpc-search", 1, "aiohttp"),
    ],
)
def test_closed_loop_run_writes_the_report(
    live: RunningService, tatoeba: Path, tmp_path: Path, target: str, texts_per_request: int, http_client: str
) -> None:
    if target.endswith("search"):  # something to find
        body = {"sentences": [{"text": "Der Zug fährt um neun.", "lang": "deu"}]}
        httpx.post(f"{live.rest}/sentences", json=body, timeout=30).raise_for_status()
    out = tmp_path / "run.json"
    code = main(
        [
            "run",
            "--target",
            target,
            "--url",
            live.rest,
            "--grpc",
            live.grpc,
            "--concurrency",
            "1,4",
            "--duration",
            "0.6",
            "--warmup",
            "0.2",
            "--texts-per-request",
            str(texts_per_request),
            "--tatoeba",
            str(tatoeba),
            "--out",
            str(out),
            "--http-client",
            http_client,
        ]
    )
    assert code == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [r["concurrency"] for r in report["runs"]] == [1, 4]
    for run in report["runs"]:
        assert set(run) >= RUN_KEYS
        assert run["errors"] == {} and run["ok"] == run["requests"] > 0
        assert run["texts_per_s"] == pytest.approx(run["throughput_rps"] * texts_per_request, rel=1e-3)
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
        server = run["server"]
        transport, method = ("rest", target.split("-")[1]) if target.startswith("rest") else ("grpc", None)
        served = sum(n for key, n in server["requests"].items() if key.startswith(transport))
        assert served == run["requests"]  # the server saw exactly the measured requests
        if method == "embed":
            assert server["cache"]["embedding"]["hit"] + server["cache"]["embedding"]["miss"] > 0
    # the tiny pool repeats, so the second run is answered from the cache
    assert report["runs"][1]["server"]["cache"]["embedding" if "embed" in target else "result"]["hit_ratio"] > 0.5


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_a_refused_request_is_counted_by_its_status(
    live: RunningService, tatoeba: Path, tmp_path: Path, http_client: str
) -> None:
    """Errors are tallied by HTTP status whichever client sends them, and the run exits non-zero."""
    out = tmp_path / "run.json"
    argv = ["run", "--target", "rest-embed", "--url", live.rest, "--path", "/v1/nowhere", "--duration", "0.4"]
    argv += ["--warmup", "0.1", "--tatoeba", str(tatoeba), "--out", str(out), "--http-client", http_client]
    assert main(argv) == 1
    run = json.loads(out.read_text(encoding="utf-8"))["runs"][0]
    assert run["ok"] == 0 and set(run["errors"]) == {"http_404"} and run["errors"]["http_404"] == run["requests"] > 0


def test_scraper_reads_the_live_metrics_endpoint(live: RunningService) -> None:
    httpx.post(f"{live.rest}/embed", json={"texts": ["hello", "Hallo"]}, timeout=30).raise_for_status()
    scrape = parse_metrics(httpx.get(f"{live.rest}/metrics", timeout=30).text)
    assert scrape["xret_batch_texts_count"] >= 1
    assert scrape['xret_cache_total{kind="embedding",result="miss"}'] == 2.0
    assert 'xret_stage_seconds_count{stage="encode"}' in scrape


def _short_setup(repo: Path, tatoeba: Path, tmp_path: Path, **extra: Any) -> Setup:
    """Scenario settings for a tiny model: sub-second runs, a few requests, and no peers installed."""
    from benchmarks.load.scenarios import Setup

    return Setup(
        repo=repo,
        work=tmp_path / "work",
        tatoeba=tatoeba,
        duration_s=0.4,
        warmup_s=0.1,
        max_requests=12,
        peers_python=tmp_path / "no-peers" / "python",
        **extra,
    )


def test_fixes_scenario_compares_every_variant_and_the_int8_member(
    tiny_repo: Path, tatoeba: Path, tmp_path: Path
) -> None:
    """Scenario `fixes` end to end on the tiny model: every serving variant, int8, and both search modes."""
    import shutil

    from benchmarks.load.scenarios import PEER_CONFIGS, run_scenario
    from export.quantize import quantize_member
    from export.repository_writer import write_ensemble

    repo, int8 = tmp_path / "repo", tmp_path / "repo-int8"
    shutil.copytree(tiny_repo, repo)
    quantize_member(repo, "tiny0", min_cosine=0.9)
    shutil.copytree(repo, int8)
    write_ensemble(repo, ["tiny0"])
    write_ensemble(int8, ["tiny0-int8"])
    setup = _short_setup(repo, tatoeba, tmp_path, repo_int8=int8, search_index_size=500)
    record = json.loads(run_scenario("fixes", setup, tmp_path / "out").read_text(encoding="utf-8"))
    assert record["infinity_problem"].startswith("peers' python not found")
    systems = {(r["system"], r["concurrency"], r["texts_per_request"]) for r in record["runs"]}
    variants = [f"xret-{name}" for name in ("before", "no-spin", "slack", "no-sln", "default", "threads1-c2", "int8")]
    assert systems == {(v, c, n) for v in variants for c, n in PEER_CONFIGS}
    assert all(r["ok"] > 0 and not r["errors"] for r in record["runs"])
    assert set(record["ceiling"]) == {"fp32", "int8"} and all(v > 0 for v in record["ceiling"].values())
    search = record["search"]
    assert search["index_size"] == 500 and search["build"]["spec"]["n"] == 500
    assert {(r["system"], r["concurrency"]) for r in search["runs"]} == {
        (s, c) for s in ("search-coalesced", "search-alone") for c in (1, 16)
    }
    assert all(r["ok"] > 0 and not r["errors"] for r in search["runs"])


def test_coalescer_scenario_runs_both_search_servers_and_says_the_ratio(
    tiny_repo: Path, tatoeba: Path, tmp_path: Path
) -> None:
    """Scenario `coalescer`: the search rows of `fixes` alone, on a 400-vector flat index, with their ratios."""
    from benchmarks.load.scenarios import run_scenario

    setup = _short_setup(tiny_repo, tatoeba, tmp_path, search_index_size=400)
    record = json.loads(run_scenario("coalescer", setup, tmp_path / "out").read_text(encoding="utf-8"))
    assert record["index_size"] == 400 and record["build"]["spec"]["n"] == 400
    systems = ("search-coalesced", "search-alone", "search-serial")
    assert {(r["system"], r["concurrency"]) for r in record["runs"]} == {(s, c) for s in systems for c in (1, 16)}
    assert all(r["ok"] > 0 and not r["errors"] for r in record["runs"])
    assert set(record["summary"]) == {f"{s}/alone c{c}" for s in ("search-coalesced", "search-serial") for c in (1, 16)}
    assert all(v["throughput"] > 0 for v in record["summary"].values())


def _packed_tiny_repo(checkpoint: Path, repo: Path) -> Path:
    """A one-member repository of the tiny model with its packed twin (model.packed.onnx), as the rounds need."""
    from export.onnx_export import export_member
    from export.repository_writer import write_ensemble
    from export.tiny import TINY_MAX_LENGTH

    export_member(checkpoint, repo, "tiny", packed=True, max_length=TINY_MAX_LENGTH, base_model="tiny")
    write_ensemble(repo, ["tiny"])
    return repo


def test_packing_scenario_runs_packed_padded_and_rotates_them_per_round(
    tiny_checkpoint: Path, tatoeba: Path, tmp_path: Path
) -> None:
    """Scenario `packing` end to end on a tiny member with its packed twin: two servers, every round, every load."""
    from benchmarks.load.packing_ab import LOADS, ROUNDS
    from benchmarks.load.scenarios import run_scenario

    repo = _packed_tiny_repo(tiny_checkpoint, tmp_path / "repo")
    setup = _short_setup(repo, tatoeba, tmp_path, pack_tokens=40)
    record = json.loads(run_scenario("packing", setup, tmp_path / "out").read_text(encoding="utf-8"))
    assert record["infinity_problem"].startswith("peers' python not found") and record["pack_tokens"] == 40
    runs = [r for r in record["runs"] if r["system"] != "ceiling"]
    ceilings = [r for r in record["runs"] if r["system"] == "ceiling"]
    assert len(runs) == ROUNDS * len(LOADS) * 2 and all(r["ok"] > 0 and not r["errors"] for r in runs)
    assert len(ceilings) == ROUNDS * len(LOADS)  # a turn of its own in every round at every load
    overhead = {r["system"]: r["server"]["encoder_tokens"]["computed_per_real"] for r in runs}
    assert min(overhead["xret-packed"], overhead["xret-padded"]) >= 1.0  # what each mode really computed
    assert all(r["texts_per_s"] == r["ceiling"]["sentences_per_s"] > 0 for r in ceilings)
    firsts = [r["system"] for r in record["runs"] if r["concurrency"] == LOADS[0][0]][::3]
    assert firsts == ["xret-packed", "xret-padded", "ceiling"][:ROUNDS]  # the order rotates per round
    for concurrency, per_request in LOADS:
        for label in ("packed/padded", "packed/ceiling", "padded/ceiling"):
            ratio = record["summary"][f"{concurrency}x{per_request}"][label]
            assert len(ratio["rounds"]) == ROUNDS and ratio["median"] > 0


def test_spinning_scenario_serves_spin_off_and_on_and_records_what_ran(
    tiny_checkpoint: Path, tatoeba: Path, tmp_path: Path
) -> None:
    """Scenario `spinning`: both servers packed, one spinning; the record reads each server's runtime back."""
    from benchmarks.load.packing_ab import LOADS, ROUNDS
    from benchmarks.load.scenarios import run_scenario

    repo = _packed_tiny_repo(tiny_checkpoint, tmp_path / "repo")
    record = json.loads(run_scenario("spinning", _short_setup(repo, tatoeba, tmp_path), tmp_path / "out").read_text())
    (off,), (on,) = record["runtime"]["xret-packed"], record["runtime"]["xret-spin"]
    assert off["ort_spinning"] is False and on["ort_spinning"] is True  # read back from the live sessions
    assert off["packed"] is True and on["packed"] is True  # both serve the packed twin
    runs = [r for r in record["runs"] if r["system"] != "ceiling"]
    assert {r["system"] for r in runs} == {"xret-packed", "xret-spin"}
    assert len(runs) == ROUNDS * len(LOADS) * 2 and all(r["ok"] > 0 and not r["errors"] for r in runs)
    for concurrency, per_request in LOADS:
        ratio = record["summary"][f"{concurrency}x{per_request}"]["spin/packed"]
        assert len(ratio["rounds"]) == ROUNDS and ratio["median"] > 0
