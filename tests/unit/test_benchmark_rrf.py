"""RRF in the retrieval benchmark: hand-made rankings whose answer is known, the same top hit as the
service's own rrf search on the tiny repository, and the CLI scoring an `@rrf` system end to end."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import main
from benchmarks.retrieval.rrf import hits_rrf
from benchmarks.retrieval.systems import System, SystemEmbedder
from service.config import Settings
from service.engine import Engine
from service.fusion import FusionOverride
from service.index import Sentence

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "tatoeba").is_dir(), reason="shared data not present")


def _unit(x: float) -> list[float]:
    """The 2-d unit vector whose cosine with (1, 0) is x."""
    return [x, math.sqrt(1 - x * x)]


def _rows(member0: list[float], member1: list[float], weights: tuple[float, float]) -> np.ndarray:
    """Concat-layout fused rows: member i's 2-d unit vectors scaled by sqrt(w_i / sum w)."""
    w0, w1 = (w / sum(weights) for w in weights)
    return np.array(
        [
            [*(math.sqrt(w0) * np.array(_unit(a))), *(math.sqrt(w1) * np.array(_unit(b)))]
            for a, b in zip(member0, member1, strict=True)
        ],
        dtype=np.float32,
    )


def test_rrf_follows_the_member_rankings_where_summed_cosines_disagree() -> None:
    """Targets T0, T1, T2. Member 0's cosines 1.0, 0.0, -0.5 rank them 1, 2, 3; member 1's 0.4, 0.6, 0.5 rank
    them 3, 1, 2. Summed cosines pick T0 (1.4 against 0.6); RRF (k 60) at equal weights picks T1
    (1/62 + 1/61 > 1/61 + 1/63), and at weights 3:1 T0 again (0.75/61 + 0.25/63 > 0.75/62 + 0.25/61)."""
    for weights, winner in (((1.0, 1.0), 1), ((3.0, 1.0), 0)):
        query = _rows([1.0], [1.0], weights)
        targets = _rows([1.0, 0.0, -0.5], [0.4, 0.6, 0.5], weights)
        assert int(np.argmax(targets @ query[0])) == 0  # what concat / score_sum would answer
        for gold in range(3):
            hit = hits_rrf(query, targets, np.array([gold]), [2, 2], weights, rrf_k=60)
            assert hit.tolist() == [gold == winner], (weights, gold)


def test_an_rrf_tie_goes_to_the_first_target_and_strict_p_at_1_refuses_it() -> None:
    """Two targets, each first for one member: equal RRF scores. The service breaks the tie by id, which the
    benchmark numbers in target order, so T0 is answered; the dev metric needs the gold strictly ahead."""
    query = _rows([1.0], [1.0], (1.0, 1.0))
    targets = _rows([0.9, 0.1], [0.1, 0.9], (1.0, 1.0))
    assert hits_rrf(query, targets, np.array([0]), [2, 2], (1.0, 1.0), rrf_k=60).tolist() == [True]
    assert hits_rrf(query, targets, np.array([1]), [2, 2], (1.0, 1.0), rrf_k=60).tolist() == [False]
    assert hits_rrf(query, targets, np.array([0]), [2, 2], (1.0, 1.0), rrf_k=60, strict=True).tolist() == [False]
    with pytest.raises(ValueError, match="not concat rows of member dims"):
        hits_rrf(query, targets, np.array([0]), [2, 3], (1.0, 1.0), rrf_k=60)


QUERIES = ["Wo ist der Bahnhof?", "Il pleut.", "猫が好きです。", "Ich habe Hunger.", "¿Dónde vives?", "Я читаю книгу."]
TARGETS = [
    "Where is the station?",
    "It is raining.",
    "I like cats.",
    "I am hungry.",
    "Where do you live?",
    "I am reading a book.",
    "The station is far.",
    "It rained yesterday.",
    "Cats sleep a lot.",
    "I ate already.",
    "He lives in Paris.",
    "Books are expensive.",
    "Is it raining?",
    "Do you like dogs?",
    "Where is my book?",
]


def test_the_benchmark_answers_what_the_services_rrf_search_answers(tiny_repo: Path, tmp_path: Path) -> None:
    """The engine indexes TARGETS and searches QUERIES with fusion rrf (weights 3:1 and 1:1); its top hit,
    taken as gold, must be a hit for the benchmark's RRF on the vectors it embeds itself, for every query."""

    async def served() -> dict[tuple[float, ...], list[str]]:
        engine = Engine(
            Settings(repo=tiny_repo, index=tmp_path / "index", redis_url=None, cache_size=0, snapshot_interval_s=0)
        )
        await engine.start()
        try:
            await engine.add_sentences([Sentence(f"t{i:02d}", text, "en") for i, text in enumerate(TARGETS)])
            out: dict[tuple[float, ...], list[str]] = {}
            for weights in ((3.0, 1.0), (1.0, 1.0)):
                hits = await engine.search(QUERIES, k=1, fusion=FusionOverride(method="rrf", weights=list(weights)))
                out[weights] = [h[0].id for h in hits]
            return out
        finally:
            await engine.stop()

    async def embedded(weights: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        spec = f"{tiny_repo}:tiny0*{weights[0]},tiny1*{weights[1]}@rrf"
        async with SystemEmbedder(System.parse("rrf", spec), tmp_path / "cache") as embedder:
            assert embedder.method == "rrf" and embedder.rrf_k == 60
            return await embedder.embed(QUERIES), await embedder.embed(TARGETS), embedder.dims

    answers = asyncio.run(served())
    for weights, top in answers.items():
        src, tgt, dims = asyncio.run(embedded(weights))
        gold = np.array([int(sid[1:]) for sid in top])
        assert hits_rrf(src, tgt, gold, dims, weights, rrf_k=60).all(), weights
        wrong = (gold + 1) % len(TARGETS)
        assert not hits_rrf(src, tgt, wrong, dims, weights, rrf_k=60).any()
    assert answers[(3.0, 1.0)] != answers[(1.0, 1.0)]  # the weights reach the ranking: the check can fail


@needs_data
def test_cli_scores_an_rrf_system_without_rescoring_or_bucc(tiny_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        "retrieval",
        "--system",
        f"cos={tiny_repo}",
        "--system",
        f"rrf={tiny_repo}@rrf",
        "--system",
        f"same={tiny_repo}",
    ]
    argv += ["--languages", "de,fr", "--max-sentences", "24", "--tasks", "tatoeba", "stsb-dev", "bucc"]
    argv += ["--rescore", "margin", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--name", "rrf"]
    argv += ["--data-dir", str(DATA)]
    assert main(argv) == 0
    results = json.loads((out / "rrf.json").read_text(encoding="utf-8"))
    assert results["systems"]["rrf"]["fusion"] == "rrf" and results["systems"]["rrf"]["rrf_k"] == 60
    assert results["systems"]["rrf"]["texts_embedded"] == 0  # the same members' vectors, from the cache
    rrf, cos = results["tatoeba"]["results"]["rrf"], results["tatoeba"]["results"]["cos"]
    assert "rescored" not in rrf and "rescored" in cos  # the service refuses rescoring with rrf
    assert "rescored" not in results["stsb_dev"]["results"]["rrf"]
    assert set(rrf["per_language"]) == {"deu", "fra"} and 0 <= rrf["average"]["xx_en"] <= 100
    assert "rrf" in results["tatoeba"]["gains"] and "rrf" not in results["bucc"]["results"]
    assert "mining needs one threshold" in results["bucc"]["not_scored"]["rrf"]
    dev = results["stsb_dev"]
    gain = dev["gains"]["rrf"]  # dev gains are paired, over the baseline (the first system)
    assert gain["baseline"] == "cos" and set(dev["gains"]) == {"rrf", "same"}
    expected = dev["results"]["rrf"]["average"]["xx_en"] - dev["results"]["cos"]["average"]["xx_en"]
    assert gain["xx_en"] == pytest.approx(expected, abs=0.011)
    assert gain["xx_en_ci95"][0] <= gain["xx_en"] + 0.01 and gain["xx_en"] - 0.01 <= gain["xx_en_ci95"][1]
    assert dev["gains"]["same"] == {"baseline": "cos", "xx_en": 0, "xx_en_ci95": [0, 0]}
    report = (out / "rrf.md").read_text(encoding="utf-8")
    assert "| gain over cos | paired 95% CI |" in report
    assert "rrf: fused by rrf, so P@1 is the top hit of the service's RRF search" in report
    assert (out / "rrf-averages.png").stat().st_size > 0
    assert (out / "rrf-gain-bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # rrf's BUCC gap: no bar
