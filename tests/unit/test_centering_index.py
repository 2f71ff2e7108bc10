"""Language-centred search in a real FAISS index: exact against brute force, means kept in step with adds,
deletes, log replay and snapshots, and refused for a query language with too few sentences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.centering import MIN_SENTENCES, center, center_by_own_mean
from service.errors import InvalidInput
from service.index import IndexParams, Sentence, SentenceIndex

DIM = 24
N = 80  # sentences per language, over MIN_SENTENCES


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def two_languages(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Translations sharing a meaning, each language adding its own strong offset (as in test_centering)."""
    rng = np.random.default_rng(seed)
    meanings = rng.normal(size=(N, DIM))
    offset_a, offset_b = np.zeros(DIM), np.zeros(DIM)
    offset_a[0], offset_b[1] = 12.0, 12.0
    side_a = _unit(meanings + offset_a + 0.05 * rng.normal(size=meanings.shape))
    side_b = _unit(meanings + offset_b + 0.05 * rng.normal(size=meanings.shape))
    return side_a, side_b


def open_index(path: Path) -> SentenceIndex:
    return SentenceIndex.open(path, DIM, "fp-centering", IndexParams(kind="flat"))


def fill(index: SentenceIndex, side_a: np.ndarray, side_b: np.ndarray) -> None:
    index.add([Sentence(f"a{i}", f"a {i}", "aa") for i in range(N)], side_a)
    index.add([Sentence(f"b{i}", f"b {i}", "bb") for i in range(N)], side_b)


def test_centred_search_finds_translations_plain_search_misses(tmp_path: Path) -> None:
    side_a, side_b = two_languages()
    index = open_index(tmp_path / "index")
    try:
        fill(index, side_a, side_b)
        gold = [f"b{i}" for i in range(N)]
        plain = [hits[0].id for hits in index.search(side_a, 1, {"bb"})]
        centred = index.search_centred(side_a, 3, {"bb"}, "aa")
        assert np.mean([p == g for p, g in zip(plain, gold, strict=True)]) < 0.5
        assert [hits[0].id for hits in centred] == gold
        # scores and order are exhaustive centred cosine's: each side minus its own mean
        truth = center_by_own_mean(side_a) @ center_by_own_mean(side_b).T
        for row, hits in enumerate(centred):
            best = np.argsort(-truth[row], kind="stable")[:3]
            assert [h.id for h in hits] == [f"b{j}" for j in best]
            np.testing.assert_allclose([h.score for h in hits], truth[row, best], atol=1e-5)
    finally:
        index.close()


def test_language_means_follow_deletes_replay_and_snapshots(tmp_path: Path) -> None:
    side_a, side_b = two_languages(seed=1)
    queries = side_a[:10]
    index = open_index(tmp_path / "index")
    fill(index, side_a, side_b)
    index.search_centred(queries, 5, {"bb"}, "aa")  # counts the sums: the delete below must update them
    index.delete([f"b{i}" for i in range(0, N, 4)])  # a quarter of bb goes: its mean moves
    kept = np.array([i for i in range(N) if i % 4])
    truth = center(queries, side_a.astype(np.float64).mean(axis=0)) @ center_by_own_mean(side_b[kept]).T
    expected = [[f"b{kept[j]}" for j in np.argsort(-row, kind="stable")[:5]] for row in truth]

    def answer(ix: SentenceIndex) -> list[list[str]]:
        return [[h.id for h in hits] for hits in ix.search_centred(queries, 5, {"bb"}, "aa")]

    assert answer(index) == expected
    index.close()
    replayed = open_index(tmp_path / "index")  # no save: the log is replayed, deletes included; sums counted anew
    assert answer(replayed) == expected
    replayed.save()  # snapshot written, log emptied: the sums are counted again from stored vectors
    replayed.close()
    reopened = open_index(tmp_path / "index")
    try:
        assert answer(reopened) == expected
        scores = [h.score for h in reopened.search_centred(queries, 5, {"bb"}, "aa")[0]]
        np.testing.assert_allclose(scores, np.sort(truth[0])[::-1][:5], atol=1e-5)
    finally:
        reopened.close()


def test_too_few_sentences_in_the_query_language_is_refused_and_small_languages_stay_uncentred(
    tmp_path: Path,
) -> None:
    side_a, side_b = two_languages(seed=2)
    index = open_index(tmp_path / "index")
    try:
        fill(index, side_a, side_b)
        index.add([Sentence(f"c{i}", f"c {i}", "cc") for i in range(3)], side_b[:3])
        with pytest.raises(InvalidInput, match=rf"'cc' needs at least {MIN_SENTENCES} indexed sentences .* has 3"):
            index.search_centred(side_a[:1], 1, None, "cc")
        with pytest.raises(InvalidInput, match=r"'zz' needs at least .* the index has 0"):
            index.search_centred(side_a[:1], 1, None, "zz")
        # cc (3 sentences) has no mean: its rows are compared as stored, with the centred query
        query = center(side_a[:1], side_a.astype(np.float64).mean(axis=0))
        (hits,) = index.search_centred(side_a[:1], 3, {"cc"}, "aa")
        np.testing.assert_allclose(sorted(h.score for h in hits), np.sort(query @ side_b[:3].T)[0], atol=1e-5)
    finally:
        index.close()
