"""Benchmark systems: member subsets, per-member caching, and fusion equal to the engine's own output."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from benchmarks.retrieval.errors import BenchmarkError
from benchmarks.retrieval.systems import System, SystemEmbedder
from service.config import Settings
from service.engine import Engine

TEXTS = ["Wo ist der Bahnhof?", "Where is the station?", "Il pleut.", "It is raining today.", "猫が好きです。"]


async def _engine_vectors(repo: Path, index: Path) -> np.ndarray:
    engine = Engine(Settings(repo=repo, index=index, redis_url=None, cache_size=0, snapshot_interval_s=0))
    await engine.start()
    try:
        return (await engine.embed(TEXTS)).vectors
    finally:
        await engine.stop()


async def _system_vectors(system: System, cache: Path | None) -> tuple[np.ndarray, SystemEmbedder]:
    async with SystemEmbedder(system, cache) as embedder:
        return await embedder.embed(TEXTS), embedder


def test_whole_repository_system_equals_the_engine(tiny_repo: Path, tmp_path: Path) -> None:
    expected = asyncio.run(_engine_vectors(tiny_repo, tmp_path / "index"))
    got, embedder = asyncio.run(_system_vectors(System("all", tiny_repo), tmp_path / "cache"))
    assert embedder.names == ["tiny0", "tiny1"] and embedder.method == "concat"
    assert got.shape == expected.shape == (len(TEXTS), embedder.dim)
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_subsets_share_member_caches_and_mean_fusion_keeps_one_dim(tiny_repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    one, first = asyncio.run(_system_vectors(System.parse("one", f"{tiny_repo}:tiny1"), cache))
    assert first.texts_embedded == len(TEXTS) and one.shape == (len(TEXTS), 32)
    mean, second = asyncio.run(_system_vectors(System.parse("mean", f"{tiny_repo}:tiny0,tiny1@mean"), cache))
    # tiny1 comes from the cache written by the first system; only tiny0 runs
    assert (second.texts_embedded, second.texts_from_cache) == (len(TEXTS), len(TEXTS))
    assert mean.shape == (len(TEXTS), 32) and second.weights == [1.0, 1.0]
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)
    # mean of the two members' unit vectors, renormalised, by hand from the cached singles
    zero, _ = asyncio.run(_system_vectors(System.parse("zero", f"{tiny_repo}:tiny0"), cache))
    by_hand = (zero + one) / np.linalg.norm(zero + one, axis=1, keepdims=True)
    np.testing.assert_allclose(mean, by_hand, atol=1e-5)
    assert System.parse("a", f"{tiny_repo}:tiny0").members == ("tiny0",)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{repo}:", "expected NAME=REPO_DIR"),
        ("{repo}@", "expected NAME=REPO_DIR"),
        ("{repo}:tiny0,tiny0", "listed twice"),
        ("{repo}@vote", "fusion 'vote' is not one of concat, mean, score_sum, rrf"),
        ("{repo}:tiny0*x,tiny1", "weight of 'tiny0' must be a number > 0, got 'x'"),
        ("{repo}:tiny0*0,tiny1", "weight of 'tiny0' must be a number > 0"),
        ("{repo}:tiny0,tiny1*-2", "weight of 'tiny1' must be a number > 0"),
        ("{repo}:tiny0*2,tiny0*1", "listed twice"),
        ("{repo}@~center", "expected NAME=REPO_DIR"),
        ("{repo}:tiny0,tiny1@rrf~center", "~center does not go with rrf"),
        ("~center", "expected NAME=REPO_DIR"),
    ],
)
def test_malformed_specs_are_named(tiny_repo: Path, spec: str, message: str) -> None:
    with pytest.raises(BenchmarkError, match=message):
        System.parse("x", spec.format(repo=tiny_repo))


def test_member_weights_scale_each_members_share_of_the_cosine(tiny_repo: Path, tmp_path: Path) -> None:
    """`MEMBER*W` weights the concatenation the way ensemble.json weights do: cosine = sum w_i cos_i / sum w_i."""
    cache = tmp_path / "cache"
    system = System.parse("w", f"{tiny_repo}:tiny0*3,tiny1")
    assert system.members == ("tiny0", "tiny1") and system.weights == (3.0, 1.0)
    fused, embedder = asyncio.run(_system_vectors(system, cache))
    assert embedder.weights == [3.0, 1.0]
    zero, _ = asyncio.run(_system_vectors(System.parse("zero", f"{tiny_repo}:tiny0"), cache))
    one, _ = asyncio.run(_system_vectors(System.parse("one", f"{tiny_repo}:tiny1"), cache))
    expected = 0.75 * (zero @ zero.T) + 0.25 * (one @ one.T)
    np.testing.assert_allclose(fused @ fused.T, expected, atol=1e-5)
    unweighted, _ = asyncio.run(_system_vectors(System.parse("u", f"{tiny_repo}:tiny0,tiny1"), cache))
    assert not np.allclose(fused, unweighted, atol=1e-3)
    assert System.parse("plain", f"{tiny_repo}:tiny0,tiny1").weights is None


def test_unknown_member_lists_what_the_repository_has(tiny_repo: Path) -> None:
    with pytest.raises(BenchmarkError, match=r"\['nope'\] not in .*it has: tiny0, tiny1"):
        SystemEmbedder(System.parse("x", f"{tiny_repo}:tiny0,nope"), None)


def test_a_member_subset_needs_no_ensemble_json(tiny_repo: Path, tmp_path: Path) -> None:
    """A pipeline writes ensemble.json last; its members can be benchmarked before that."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    (repo / "ensemble.json").unlink()
    alone, embedder = asyncio.run(_system_vectors(System.parse("one", f"{repo}:tiny1"), None))
    assert embedder.method == "concat" and embedder.weights == [1.0] and alone.shape == (len(TEXTS), 32)
    with pytest.raises(BenchmarkError, match=r"ensemble\.json"):
        SystemEmbedder(System("whole", repo), None)


def test_a_centred_system_centres_one_language_sides_only(tiny_repo: Path, tmp_path: Path) -> None:
    """`~center` subtracts a side's own mean in `embed_language`; `embed` (the multilingual reference) is untouched."""
    system = System.parse("c", f"{tiny_repo}:tiny0,tiny1@mean~center")
    assert (system.center, system.fusion, system.members) == (True, "mean", ("tiny0", "tiny1"))
    texts = [f"sentence number {i} about {word}" for i, word in enumerate(["cats", "rain", "trains"] * 20)]

    async def both() -> tuple[np.ndarray, np.ndarray]:
        async with SystemEmbedder(system, tmp_path / "cache") as embedder:
            return await embedder.embed(texts), await embedder.embed_language(texts)

    plain, centred = asyncio.run(both())
    by_hand = plain - plain.astype(np.float64).mean(axis=0)
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    np.testing.assert_allclose(centred, by_hand, atol=1e-5)
    assert np.abs(centred.astype(np.float64).mean(axis=0)).max() < np.abs(plain.mean(axis=0)).max()
    assert not System.parse("p", str(tiny_repo)).center


def test_a_side_too_small_to_centre_is_named(tiny_repo: Path, tmp_path: Path) -> None:
    async def embed_two() -> None:
        async with SystemEmbedder(System.parse("c", f"{tiny_repo}~center"), tmp_path / "cache") as embedder:
            await embedder.embed_language(TEXTS[:2], desc="afr xx")

    with pytest.raises(BenchmarkError, match="afr xx: cannot centre: a language mean needs at least 50 sentences"):
        asyncio.run(embed_two())
