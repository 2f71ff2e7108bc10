"""Hubness rescoring through the Engine on the tiny repository: a planted hub in a real FAISS index loses
under margin and CSLS, the choice is validated, cached and coalesced per method, and survives a restart."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.config import Settings
from service.engine import Engine
from service.errors import InvalidInput, StartupError
from service.fusion import FusionOverride
from service.index import Hit, Sentence, SentenceIndex
from service.index_store import NEIGHBOURHOOD_FILE

QUERY = "Die Katze schläft."
NAMES = ["H", "C1", "C2", "C3", "C4", "T1", "T2", "T3"]


def engine_run(repo: Path, index: Path, body: Callable[[Engine], Coroutine[Any, Any, None]], **opts: Any) -> None:
    opts.setdefault("neighbourhood_stats", True)

    async def main() -> None:
        engine = Engine(
            Settings(repo=repo, index=index, redis_url=None, snapshot_interval_s=0, intra_op_threads=1, **opts)
        )
        await engine.start()
        try:
            await body(engine)
        finally:
            await engine.stop()

    asyncio.run(main())


def planted(query: np.ndarray) -> np.ndarray:
    """Unit vectors around the real query vector q: a hub H = e0, its crowd Ci = 0.95 e0 + 0.312 e_i,
    and translations Tj = 0.3 e0 + 0.85 e_{4+j} + 0.433 e_{7+j}, where q = 0.8 e0 + 0.6 e5.

    cos(q, H) = 0.8 > cos(q, Ci) = 0.76 > cos(q, T1) = 0.75: plain cosine ranks H first. Stored r_y (k=4
    among the planted rows): H 0.95, Ci (0.95 + 3 * 0.9025) / 4, Tj (0.3 + 3 * 0.285) / 4; the query's
    r_x = (0.8 + 3 * 0.76) / 4 = 0.77. Margin: T1 0.75 / ((0.77 + 0.289) / 2) = 1.417 > H 0.8 / 0.86 = 0.930.
    """
    rng = np.random.default_rng(0)
    q = query.astype(np.float64) / np.linalg.norm(query)
    basis = [q]
    while len(basis) < 11:  # Gram-Schmidt: q and ten random directions orthogonal to it and each other
        v = rng.standard_normal(q.size)
        for b in basis:
            v -= (v @ b) * b
        basis.append(v / np.linalg.norm(v))
    f1, f2 = basis[0], basis[1]
    e = [0.8 * f1 - 0.6 * f2, *basis[2:6], 0.6 * f1 + 0.8 * f2, *basis[6:11]]  # e0..e10, q = 0.8 e0 + 0.6 e5
    crowd = [0.95 * e[0] + math.sqrt(1 - 0.95**2) * e[i] for i in range(1, 5)]
    translations = [0.3 * e[0] + 0.85 * e[4 + j] + math.sqrt(0.1875) * e[7 + j] for j in range(1, 4)]
    return np.stack([e[0], *crowd, *translations]).astype(np.float32)


def plant(engine: Engine, vectors: np.ndarray) -> None:
    """Add vectors as they are (not embeddings of texts) to the engine's own index: the hub must sit exactly
    where the test puts it."""
    index = engine._index
    assert isinstance(index, SentenceIndex)
    index.add([Sentence(name, f"planted {name}", "xx") for name in NAMES], vectors)


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


R_X = (0.8 + 3 * 0.76) / 4
R_T = (0.3 + 3 * 0.285) / 4


def test_a_planted_hub_wins_on_cosine_and_loses_under_margin_and_csls(tiny_repo: Path, tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        query = (await engine.embed([QUERY])).vectors[0]
        plant(engine, planted(query))
        (plain,) = await engine.search([QUERY], k=3)
        assert plain[0].id == "H" and plain[0].score == pytest.approx(0.8, abs=1e-5)
        assert set(ids(plain[1:])) <= {"C1", "C2", "C3", "C4"}
        # same query, same k: the cached cosine answer must not be served for a rescored search
        (margin,) = await engine.search([QUERY], k=3, rescore="margin")
        assert margin[0].id == "T1" and margin[0].score == pytest.approx(0.75 / ((R_X + R_T) / 2), abs=1e-4)
        assert ids(margin)[1] == "H" and margin[1].score == pytest.approx(0.8 / ((R_X + 0.95) / 2), abs=1e-4)
        (csls,) = await engine.search([QUERY], k=3, rescore="csls")
        assert csls[0].id == "T1" and csls[0].score == pytest.approx(1.5 - R_X - R_T, abs=1e-4)
        assert (await engine.search([QUERY], k=3, rescore="none"))[0] == plain
        misses = engine.metrics.registry.get_sample_value("xret_cache_total", {"kind": "result", "result": "miss"})
        assert misses == 3  # the default (none), margin, csls; the explicit "none" was the default's cache hit

    engine_run(tiny_repo, tmp_path / "index", body)


def test_server_default_validation_and_fusions_that_cannot_be_rescored(tiny_repo: Path, tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        query = (await engine.embed([QUERY])).vectors[0]
        plant(engine, planted(query))
        assert ids((await engine.search([QUERY], k=1))[0]) == ["T1"]  # the server default: margin
        assert ids((await engine.search([QUERY], k=1, rescore="none"))[0]) == ["H"]
        assert ids((await engine.search([QUERY], k=1, rescore=""))[0]) == ["T1"]  # gRPC's unset string
        with pytest.raises(InvalidInput, match="rescore: 'cosine' is not one of none, margin, csls"):
            await engine.search([QUERY], k=1, rescore="cosine")
        rrf = FusionOverride(method="rrf")
        with pytest.raises(InvalidInput, match="rescore: 'csls' needs cosine scores of the stored vectors"):
            await engine.search([QUERY], k=1, fusion=rrf, rescore="csls")
        reweighted = FusionOverride(weights=[1, 0])
        with pytest.raises(InvalidInput, match=r"fusion 'concat' with weights \[1.0, 0.0\]"):
            await engine.search([QUERY], k=1, fusion=reweighted, rescore="margin")
        # the default steps aside for such a search, and says so
        assert engine.rescore_for(None, engine.fusion_for(rrf)) == "none"
        assert len((await engine.search([QUERY], k=2, fusion=rrf))[0]) == 2
        # score_sum at the repository's weights is the stored inner product: rescorable
        same = FusionOverride(method="score_sum")
        assert ids((await engine.search([QUERY], k=1, fusion=same, rescore="margin"))[0]) == ["T1"]

    engine_run(tiny_repo, tmp_path / "index", body, search_rescore="margin")


def test_concurrent_searches_are_coalesced_per_rescore_method(tiny_repo: Path, tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        query = (await engine.embed([QUERY])).vectors[0]
        plant(engine, planted(query))
        methods = ["none", "margin", "none", "margin", "csls"]
        results = await asyncio.gather(*(engine.search([QUERY], k=2, rescore=m) for m in methods))
        assert [r[0][0].id for r in results] == ["H", "T1", "H", "T1", "T1"]
        calls = engine.metrics.registry.get_sample_value("xret_search_batch_queries_count")
        assert calls == 3  # one index search per method, never one mixing them

    # cache off, one text per encoder batch, a long search window: all five reach the coalescer together
    engine_run(tiny_repo, tmp_path / "index", body, cache_size=0, search_max_wait_ms=2000, max_batch_size=1)


def test_rescored_ranking_and_stored_r_survive_a_restart(tiny_repo: Path, tmp_path: Path) -> None:
    first: list[list[Hit]] = []

    async def before(engine: Engine) -> None:
        query = (await engine.embed([QUERY])).vectors[0]
        plant(engine, planted(query))
        first.extend(await engine.search([QUERY], k=4, rescore="margin"))

    async def after(engine: Engine) -> None:
        assert engine.stats()["index"]["neighbourhood_version"] == engine.stats()["index"]["version"]
        again = await engine.search([QUERY], k=4, rescore="margin")
        assert ids(again[0]) == ids(first[0]) and ids(again[0])[0] == "T1"
        assert [h.score for h in again[0]] == pytest.approx([h.score for h in first[0]], abs=1e-6)

    index = tmp_path / "index"
    engine_run(tiny_repo, index, before)  # stop() snapshots: the r values go into the snapshot
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert NEIGHBOURHOOD_FILE in manifest["files"] and (index / manifest["snapshot"] / NEIGHBOURHOOD_FILE).is_file()
    engine_run(tiny_repo, index, after)


def test_default_rescoring_on_an_rrf_repository_refuses_to_start(tiny_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    manifest = json.loads((repo / "ensemble.json").read_text(encoding="utf-8"))
    manifest["fusion"]["method"] = "rrf"
    manifest["dim"] = 32  # what service.repository.fused_dim asks of an rrf repository of two 32-dim members
    (repo / "ensemble.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(StartupError, match="search_rescore='margin' needs searches scored by cosine"):
        engine_run(repo, tmp_path / "index", lambda engine: asyncio.sleep(0), search_rescore="margin")


def test_without_statistics_nothing_is_computed_and_rescoring_is_refused(tiny_repo: Path, tmp_path: Path) -> None:
    """Off by default: adds run no neighbourhood search, snapshots carry no file, rescore says what to turn on."""
    from service.errors import InvalidInput

    async def body(engine: Engine) -> None:
        await engine.add_sentences([Sentence(id=f"s{i}", text=f"sentence {i}", lang="eng") for i in range(6)])
        with pytest.raises(InvalidInput, match="--neighbourhood-stats"):
            await engine.search([QUERY], k=3, rescore="margin")
        assert len((await engine.search([QUERY], k=3))[0]) == 3

    engine_run(tiny_repo, tmp_path / "index", body, neighbourhood_stats=False)
    from service.index_store import read_manifest

    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None and manifest.rows == 6 and manifest.neighbour_k == 0
    assert NEIGHBOURHOOD_FILE not in manifest.files
    assert not list((tmp_path / "index").glob(f"*/{NEIGHBOURHOOD_FILE}"))
