"""Hubness rescoring: the pure functions on hand-made vectors, and the index's stored r_y on real FAISS."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from service.errors import StartupError
from service.hubness import (
    NEIGHBOURHOOD_K,
    candidate_count,
    neighbourhood_means,
    query_means,
    rescore,
    top_k_means,
)
from service.index import IndexParams, Sentence, SentenceIndex
from service.index_store import MANIFEST, NEIGHBOURHOOD_FILE

c = lambda degrees: math.cos(math.radians(degrees))  # noqa: E731


def at(*degrees: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles: cosines are then easy to do by hand."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def hub_world() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Three queries, and targets: a hub (H), its crowd of four (C1-C4), and each query's translation (T1-T3).

    On an orthonormal basis e0..e10: H = e0; Ci = 0.95 e0 + sqrt(1 - 0.95^2) e_i; Qj = 0.8 e0 + 0.6 e_{4+j};
    Tj = 0.3 e0 + 0.85 e_{4+j} + sqrt(0.1875) e_{7+j}. So cos(Qj, H) = 0.8 > cos(Qj, Ci) = 0.76 >
    cos(Qj, Tj) = 0.75: plain cosine answers H for every query. With k = 4: r_H = 0.95 (its crowd),
    r_Ci = (0.95 + 3 * 0.9025) / 4, r_Tj = (0.3 + 3 * 0.285) / 4 and r_Qj = (0.8 + 3 * 0.76) / 4.
    """
    e = np.eye(11, dtype=np.float64)
    crowd = [0.95 * e[0] + math.sqrt(1 - 0.95**2) * e[i] for i in range(1, 5)]
    queries = np.stack([0.8 * e[0] + 0.6 * e[4 + j] for j in range(1, 4)])
    translations = [0.3 * e[0] + 0.85 * e[4 + j] + math.sqrt(0.1875) * e[7 + j] for j in range(1, 4)]
    targets = np.stack([e[0], *crowd, *translations])
    names = ["H", "C1", "C2", "C3", "C4", "T1", "T2", "T3"]
    return queries.astype(np.float32), targets.astype(np.float32), names


# ------------------------------------------------------------------------------------------ pure functions
def test_rescore_formulas_on_numbers() -> None:
    cos, r_x, r_y = np.array([0.9, 0.8]), 0.7, np.array([0.9, 0.5])
    assert rescore(cos, r_x, r_y, "none").tolist() == [0.9, 0.8]
    assert rescore(cos, r_x, r_y, "margin") == pytest.approx([0.9 / 0.8, 0.8 / 0.6])
    assert rescore(cos, r_x, r_y, "csls") == pytest.approx([1.8 - 0.7 - 0.9, 1.6 - 0.7 - 0.5])
    # two queries at once: r_query is one value per row, broadcast along the candidates
    both = rescore(np.array([[0.9, 0.8], [0.5, 0.4]]), np.array([0.7, 0.3]), np.array([[0.9, 0.5], [0.5, 0.5]]), "csls")
    assert both == pytest.approx(np.array([[0.2, 0.4], [0.2, 0.0]]))
    with pytest.raises(ValueError, match="'cosine' is not one of none, margin, csls"):
        rescore(cos, r_x, r_y, "cosine")


def test_neighbourhood_means_by_hand_exclude_self_and_count_duplicates() -> None:
    vectors = at(0, 10, 20, 90)
    expected = [(c(10) + c(20)) / 2, c(10), (c(10) + c(20)) / 2, (c(70) + c(80)) / 2]
    for batch in (1, 3, 1024):  # blocks that split rows and columns, and one block for all
        assert neighbourhood_means(vectors, 2, batch=batch) == pytest.approx(expected, rel=1e-6)
    # an exact duplicate is a neighbour (only the row itself is skipped, by position)
    assert neighbourhood_means(at(0, 0, 90), 1).tolist() == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)
    # fewer rows than k: the mean of those there are; a lone row has none and gets 0
    assert neighbourhood_means(at(0, 60), 4) == pytest.approx([0.5, 0.5])
    assert neighbourhood_means(at(30), 4).tolist() == [0.0]
    # across two matrices nothing is excluded
    assert top_k_means(at(0), at(0, 90), 1).tolist() == pytest.approx([1.0])


def test_neighbourhood_means_matches_brute_force_on_random_vectors() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    truth = np.sort(sims, axis=1)[:, -4:].mean(axis=1)
    assert neighbourhood_means(vectors, 4, batch=64) == pytest.approx(truth, abs=1e-6)


def test_query_means_and_candidate_count() -> None:
    assert query_means(np.array([[0.9, 0.8, 0.1, 0.0], [0.5, 0.3, 0.2, 0.1]]), 2) == pytest.approx([0.85, 0.4])
    assert query_means(np.array([0.9, 0.7]), 4) == pytest.approx(0.8)  # fewer than k: those there are
    assert (candidate_count(1), candidate_count(10), candidate_count(11)) == (100, 100, 110)


def test_a_hub_wins_plain_cosine_for_every_query_and_loses_under_margin_and_csls() -> None:
    queries, targets, names = hub_world()
    cos = queries.astype(np.float64) @ targets.T.astype(np.float64)
    assert [names[i] for i in cos.argmax(axis=1)] == ["H", "H", "H"]

    r_y = neighbourhood_means(targets, NEIGHBOURHOOD_K)
    assert r_y == pytest.approx([0.95] + [(0.95 + 3 * 0.9025) / 4] * 4 + [(0.3 + 3 * 0.285) / 4] * 3, abs=1e-6)
    order = np.argsort(-cos, axis=1)
    r_x = query_means(np.take_along_axis(cos, order, axis=1), NEIGHBOURHOOD_K)
    assert r_x == pytest.approx([(0.8 + 3 * 0.76) / 4] * 3, abs=1e-6)

    margin = rescore(cos, r_x, r_y, "margin")
    assert [names[i] for i in margin.argmax(axis=1)] == ["T1", "T2", "T3"]
    assert margin[0, 0] == pytest.approx(0.8 / ((0.77 + 0.95) / 2), abs=1e-6)  # the hub, pushed down
    assert margin[0, 5] == pytest.approx(0.75 / ((0.77 + (0.3 + 3 * 0.285) / 4) / 2), abs=1e-6)
    csls = rescore(cos, r_x, r_y, "csls")
    assert [names[i] for i in csls.argmax(axis=1)] == ["T1", "T2", "T3"]


# ------------------------------------------------------------------------------------------ the index
@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[SentenceIndex]]:
    """Indexes opened by a test, closed at teardown (a closed one is skipped)."""
    indexes: list[SentenceIndex] = []
    yield indexes
    for index in indexes:
        index.close()


def open_index(path: Path, opened: list[SentenceIndex], dim: int = 11, kind: str = "flat") -> SentenceIndex:
    params = IndexParams(kind=kind)  # type: ignore[arg-type]
    index = SentenceIndex.open(path, dim=dim, fingerprint="fp", params=params, neighbourhood=True)
    opened.append(index)
    return index


def sentences(names: list[str]) -> list[Sentence]:
    return [Sentence(name, f"text of {name}", "en") for name in names]


def r_by_id(index: SentenceIndex, queries: np.ndarray) -> dict[str, float]:
    """The stored r_y of every sentence the queries reach (k = all)."""
    out: dict[str, float] = {}
    for hits, r_y in index.search_with_neighbourhood(queries, len(index)):
        out.update({h.id: float(r) for h, r in zip(hits, r_y, strict=True)})
    return out


def test_add_computes_r_against_the_index_then_and_save_recomputes_every_row(
    tmp_path: Path, opened: list[SentenceIndex]
) -> None:
    _, targets, names = hub_world()
    index = open_index(tmp_path / "idx", opened)
    index.add(sentences(names[:5]), targets[:5])  # H and its crowd
    first = r_by_id(index, targets)
    assert first["H"] == pytest.approx(0.95, abs=1e-6)
    index.add(sentences(names[5:]), targets[5:])  # the translations arrive later, in one batch
    later = r_by_id(index, targets)
    # the new batch sees the whole index (itself included); the older rows keep what they had
    assert later["T1"] == pytest.approx((0.3 + 3 * 0.285) / 4, abs=1e-6)
    assert later["C1"] == pytest.approx(first["C1"])
    index.delete(["C4"])
    index.save()  # compacts, then recomputes every row against what is left, exactly as numpy would
    left = [i for i, name in enumerate(names) if name != "C4"]
    truth = neighbourhood_means(targets[left], NEIGHBOURHOOD_K)
    saved = r_by_id(index, targets)
    assert [saved[names[i]] for i in left] == pytest.approx(truth.tolist(), abs=1e-6)
    assert saved["H"] == pytest.approx(0.95 * 3 / 4 + 0.3 / 4, abs=1e-6)  # lost C4: now 3 crowd + a translation


def test_r_survives_a_restart_from_the_snapshot_and_from_the_log(tmp_path: Path, opened: list[SentenceIndex]) -> None:
    _, targets, names = hub_world()
    index = open_index(tmp_path / "idx", opened)
    index.add(sentences(names[:6]), targets[:6])
    index.save()
    index.add(sentences(names[6:]), targets[6:])  # only in the log
    before = r_by_id(index, targets)
    index.close()
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text(encoding="utf-8"))
    assert NEIGHBOURHOOD_FILE in manifest["files"] and manifest["neighbour_k"] == NEIGHBOURHOOD_K
    again = open_index(tmp_path / "idx", opened)
    assert r_by_id(again, targets) == pytest.approx(before)  # snapshot values + replayed adds, as live
    again.save()
    again.close()
    third = open_index(tmp_path / "idx", opened)
    assert r_by_id(third, targets) == pytest.approx(
        dict(zip(names, neighbourhood_means(targets, NEIGHBOURHOOD_K).tolist(), strict=True)), abs=1e-6
    )


def test_damaged_neighbourhood_file_refuses_to_start(tmp_path: Path, opened: list[SentenceIndex]) -> None:
    _, targets, names = hub_world()
    index = open_index(tmp_path / "idx", opened)
    index.add(sentences(names), targets)
    index.save()
    index.close()
    (stored,) = (tmp_path / "idx").glob(f"snapshot-*/{NEIGHBOURHOOD_FILE}")
    stored.write_bytes(stored.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(StartupError, match=f"{NEIGHBOURHOOD_FILE}: sha256 does not match"):
        open_index(tmp_path / "idx", opened)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_r_equals_numpy_on_random_vectors(tmp_path: Path, opened: list[SentenceIndex], kind: str) -> None:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        rng = np.random.default_rng(3)
        vectors = rng.standard_normal((500, 24)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = open_index(tmp_path / kind, opened, dim=24, kind=kind)
        ids = [f"s{i}" for i in range(500)]
        index.add(sentences(ids), vectors)  # 500 rows: below EXACT_MAX_ROWS, so exact even on HNSW
        truth = dict(zip(ids, neighbourhood_means(vectors, NEIGHBOURHOOD_K).tolist(), strict=True))
        assert r_by_id(index, vectors[:20]) == pytest.approx({k: truth[k] for k in r_by_id(index, vectors[:20])})
    finally:
        faiss.omp_set_num_threads(threads)
