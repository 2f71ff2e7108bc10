"""SentenceIndex on real FAISS in temporary folders: exactness, filters, deletes, durability, recovery."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from service.errors import Conflict, InvalidInput, NotFound, StartupError, Unavailable
from service.index import IndexParams, Sentence, SentenceIndex
from service.index_store import INDEX_FILE, MANIFEST, SENTENCES_FILE, WAL_FILE

DIM = 32
FINGERPRINT = "fp-test-repo"
KINDS = ["flat", "ivf", "hnsw"]
# IVF with 32 lists trains at 39 * 32 = 1248 vectors; the shared corpus below is well past that.
SMALL_IVF = {"ivf_nlist": 32, "ivf_nprobe": 16}

Opener = Callable[..., SentenceIndex]


def unit_vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def lang_of(i: int) -> str:
    """1% fr, 40% de, 59% en: a rare language and two big ones."""
    if i % 100 == 0:
        return "fr"
    return "de" if i % 100 <= 40 else "en"


def make_sentences(n: int, start: int = 0) -> list[Sentence]:
    return [Sentence(f"s{i}", f"text {i}", lang_of(i), {"n": i}) for i in range(start, start + n)]


def brute_force(vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int) -> list[list[str]]:
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order]


def hit_ids(results: list[list[Any]]) -> list[list[str]]:
    return [[h.id for h in hits] for hits in results]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


CORPUS = unit_vectors(4000, seed=1)
CORPUS_IDS = [f"s{i}" for i in range(len(CORPUS))]
QUERIES = unit_vectors(40, seed=2)


@pytest.fixture(autouse=True, scope="module")
def single_threaded_faiss() -> Iterator[None]:
    """HNSW builds are ~5x slower with OpenMP spinning on 2 shared cores; results do not depend on it."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture
def open_index(tmp_path: Path) -> Iterator[Opener]:
    """Open (or reopen) the index in one temp folder; everything opened is closed at teardown."""
    opened: list[SentenceIndex] = []

    def opener(
        kind: str = "flat", fingerprint: str = FINGERPRINT, dim: int = DIM, **params: Any
    ) -> SentenceIndex:
        if kind == "ivf":
            params = {**SMALL_IVF, **params}
        index_params = IndexParams(kind=kind, **params)  # type: ignore[arg-type]
        index = SentenceIndex.open(tmp_path / "index", dim, fingerprint, index_params)
        opened.append(index)
        return index

    yield opener
    for index in opened:
        index.close()


def filled(open_index: Opener, kind: str, n: int = len(CORPUS)) -> SentenceIndex:
    index = open_index(kind)
    index.add(make_sentences(n), CORPUS[:n])
    return index


def state(index: SentenceIndex) -> tuple[Any, ...]:
    """Everything a client can observe, for before/after comparisons."""
    results = index.search(QUERIES, 10)
    return (
        len(index),
        index.version,
        index.languages(),
        hit_ids(results),
        [[round(h.score, 5) for h in hits] for hits in results],
    )


def observed(index: SentenceIndex, kind: str) -> tuple[Any, ...]:
    """`state` for exact search; for approximate kinds (whose graph or centroids a rebuild may change
    slightly) the same facts plus a recall floor against brute force over what is stored."""
    if kind == "flat":
        return state(index)
    rows = [int(sid[1:]) for sid in CORPUS_IDS if index.get(sid) is not None]
    truth = brute_force(CORPUS[rows], [CORPUS_IDS[i] for i in rows], QUERIES, 10)
    good = recall(hit_ids(index.search(QUERIES, 10)), truth) >= 0.9
    return (len(index), index.version, index.languages(), good)


def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


def snapshot_dir(tmp_path: Path) -> Path:
    manifest = json.loads((index_dir(tmp_path) / MANIFEST).read_text())
    return index_dir(tmp_path) / manifest["snapshot"]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------- search


def test_flat_search_matches_numpy_brute_force(open_index: Opener) -> None:
    index = filled(open_index, "flat", 500)
    results = index.search(QUERIES, 10)
    assert hit_ids(results) == brute_force(CORPUS[:500], CORPUS_IDS[:500], QUERIES, 10)
    expected_scores = np.sort(QUERIES @ CORPUS[:500].T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose([[h.score for h in hits] for hits in results], expected_scores, atol=1e-5)
    first = results[0][0]
    n = int(first.id[1:])
    assert (first.text, first.lang, first.metadata) == (f"text {n}", lang_of(n), {"n": n})


def test_k_is_clipped_to_what_is_stored(open_index: Opener) -> None:
    index = open_index("flat")
    assert index.search(QUERIES[:2], 5) == [[], []]
    index.add(make_sentences(3), CORPUS[:3])
    assert [len(hits) for hits in index.search(QUERIES[:2], 10)] == [3, 3]
    assert [len(hits) for hits in index.search(QUERIES[:2], 10, {"fr"})] == [1, 1]
    assert index.search(QUERIES[:2], 10, {"xx"}) == [[], []]


@pytest.mark.parametrize("kind", KINDS)
def test_rare_language_filter_still_returns_k_exact_hits(open_index: Opener, kind: str) -> None:
    index = filled(open_index, kind)
    assert index.languages() == {"fr": 40, "de": 1600, "en": 2360}
    fr = [i for i in range(len(CORPUS)) if lang_of(i) == "fr"]
    results = index.search(QUERIES, 10, {"fr"})
    assert all(len(hits) == 10 and {h.lang for h in hits} == {"fr"} for hits in results)
    assert hit_ids(results) == brute_force(CORPUS[fr], [CORPUS_IDS[i] for i in fr], QUERIES, 10)
    assert all([h.score for h in hits] == sorted((h.score for h in hits), reverse=True) for hits in results)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_at_10_with_and_without_a_filter(open_index: Opener, kind: str) -> None:
    index = filled(open_index, kind)
    assert index.stats()["kind"] == kind
    assert recall(hit_ids(index.search(QUERIES, 10)), brute_force(CORPUS, CORPUS_IDS, QUERIES, 10)) >= 0.9
    # 59% of the rows: too many for the exact shortcut, so the selector runs inside the ANN search.
    en = [i for i in range(len(CORPUS)) if lang_of(i) == "en"]
    results = index.search(QUERIES, 10, {"en"})
    assert all(len(hits) == 10 and {h.lang for h in hits} == {"en"} for hits in results)
    assert recall(hit_ids(results), brute_force(CORPUS[en], [CORPUS_IDS[i] for i in en], QUERIES, 10)) >= 0.9


def test_new_ivf_index_answers_exactly_until_it_can_train(open_index: Opener) -> None:
    index = open_index("ivf")
    index.add(make_sentences(1), CORPUS[:1])
    assert hit_ids(index.search(QUERIES[:1], 10)) == [["s0"]]
    index.add(make_sentences(199, start=1), CORPUS[1:200])
    assert index.stats()["ivf_trained"] is False
    assert hit_ids(index.search(QUERIES, 10)) == brute_force(CORPUS[:200], CORPUS_IDS[:200], QUERIES, 10)
    index.add(make_sentences(1300, start=200), CORPUS[200:1500])  # crosses 39 * nlist = 1248
    assert index.stats()["ivf_trained"] is True
    truth = brute_force(CORPUS[:1500], CORPUS_IDS[:1500], QUERIES, 10)
    assert recall(hit_ids(index.search(QUERIES, 10)), truth) >= 0.9


# ---------------------------------------------------------------------------------------- deletes


@pytest.mark.parametrize("kind", KINDS)
def test_deleted_sentences_never_come_back(open_index: Opener, kind: str, tmp_path: Path) -> None:
    index = filled(open_index, kind, 3000)
    top = {hits[0].id for hits in index.search(QUERIES, 10)}
    gone = sorted(top | {f"s{i}" for i in range(0, 3000, 3)})
    version = index.version
    assert index.delete(gone) == len(gone)
    assert index.version == version + 1
    assert len(index) == 3000 - len(gone)
    assert index.get(gone[0]) is None and index.get("s1") is not None
    assert sum(index.languages().values()) == len(index)
    kept = [i for i in range(3000) if f"s{i}" not in set(gone)]
    truth = brute_force(CORPUS[kept], [CORPUS_IDS[i] for i in kept], QUERIES, 10)
    for langs in (None, {"fr"}):
        for hits in index.search(QUERIES, 10, langs):
            assert len(hits) == 10 and not {h.id for h in hits} & set(gone)
    assert recall(hit_ids(index.search(QUERIES, 10)), truth) >= (1.0 if kind == "flat" else 0.9)

    index.save()  # compaction drops the dead rows for real
    stats = index.stats()
    assert stats["stored_rows"] == stats["size"] == len(kept) and stats["deleted_pending_compaction"] == 0
    assert recall(hit_ids(index.search(QUERIES, 10)), truth) >= (1.0 if kind == "flat" else 0.9)
    assert not {h.id for hits in index.search(QUERIES, 10) for h in hits} & set(gone)


def test_unknown_delete_is_not_found_and_deletes_nothing(open_index: Opener) -> None:
    index = filled(open_index, "flat", 50)
    before = state(index)
    with pytest.raises(NotFound, match="'nope'"):
        index.delete(["s1", "nope"])
    assert state(index) == before and index.get("s1") is not None


# ---------------------------------------------------------------------------------------- validation


def test_duplicate_ids_conflict_and_leave_the_index_unchanged(open_index: Opener) -> None:
    index = filled(open_index, "flat", 50)
    before = state(index)
    with pytest.raises(Conflict, match="'s3'"):
        index.add([Sentence("new", "x", "en"), Sentence("s3", "y", "en")], CORPUS[100:102])
    with pytest.raises(Conflict, match="'twice'"):
        index.add([Sentence("twice", "x", "en"), Sentence("twice", "y", "en")], CORPUS[100:102])
    assert state(index) == before and index.get("new") is None
    index.close()
    assert state(open_index("flat")) == before  # nothing reached the log either


@pytest.mark.parametrize(
    ("sentences", "vectors", "message"),
    [
        ([Sentence("a", "x", "en")], np.zeros((1, DIM + 1), np.float32), "shape"),
        ([Sentence("a", "x", "en")], np.full((1, DIM), np.nan, np.float32), "NaN"),
        ([Sentence("a", "x", "en")], np.zeros((2, DIM), np.float32), "pair up"),
        ([Sentence("", "x", "en")], np.zeros((1, DIM), np.float32), "id"),
        ([Sentence("a", "x", "")], np.zeros((1, DIM), np.float32), "lang"),
        ([Sentence("a", "x", "en", {"when": object()})], np.zeros((1, DIM), np.float32), "JSON"),
        ([Sentence("a", "x", "en")], np.zeros((1, DIM), np.int64), "float32"),
        ([Sentence("a", "\ud800", "en")], np.zeros((1, DIM), np.float32), "surrogate"),
    ],
)
def test_bad_input_is_invalid_and_changes_nothing(
    open_index: Opener, sentences: list[Sentence], vectors: np.ndarray, message: str
) -> None:
    index = filled(open_index, "flat", 20)
    before = state(index)
    with pytest.raises(InvalidInput, match=message):
        index.add(sentences, vectors)
    assert state(index) == before


def test_bad_search_arguments_are_invalid(open_index: Opener) -> None:
    index = filled(open_index, "flat", 20)
    with pytest.raises(InvalidInput, match="k must"):
        index.search(QUERIES, 0)
    with pytest.raises(InvalidInput, match="shape"):
        index.search(QUERIES[0], 3)


# ---------------------------------------------------------------------------------------- durability


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reopen_gives_the_same_answers(open_index: Opener, kind: str) -> None:
    index = filled(open_index, kind)
    index.delete([f"s{i}" for i in range(0, 4000, 7)])
    if kind == "flat":
        unsaved = state(index)
    index.save()  # compaction: HNSW gets a new graph, so compare with what the saved index answers
    if kind == "flat":
        assert state(index) == unsaved
    before = state(index)
    filtered = hit_ids(index.search(QUERIES, 5, {"fr", "de"}))
    index.close()
    again = open_index(kind)
    assert state(again) == before
    assert hit_ids(again.search(QUERIES, 5, {"fr", "de"})) == filtered
    assert again.get("s1") == Sentence("s1", "text 1", "de", {"n": 1})
    assert again.stats()["wal_bytes"] == 0 and again.stats()["saved_version"] == again.version


@pytest.mark.parametrize("kind", KINDS)
def test_log_replay_restores_unsaved_changes(open_index: Opener, kind: str) -> None:
    index = open_index(kind)
    index.add(make_sentences(1000), CORPUS[:1000])
    index.add(make_sentences(1000, start=1000), CORPUS[1000:2000])  # IVF trains here, in replay too
    index.delete(["s5", "s1400"])
    before = observed(index, kind)
    assert index.stats()["wal_bytes"] > 0 and index.stats()["saved_version"] == 0
    index.close()  # no save: the log alone must carry the three changes
    again = open_index(kind)
    assert observed(again, kind) == before and again.version == 3
    assert again.get("s1400") is None and again.get("s1999") == Sentence(
        "s1999", "text 1999", "en", {"n": 1999}
    )
    again.save()
    again.close()
    assert observed(open_index(kind), kind) == before


@pytest.mark.parametrize(
    "tear",
    [
        lambda data: data[:-7],  # payload cut short
        lambda data: data[: data.rindex(b"XWAL") + 9],  # header cut short
        lambda data: data[: data.rindex(b"XWAL")] + b"\0" * 300,  # size grew, data never landed
    ],
    ids=["payload", "header", "zeros"],
)
def test_torn_last_log_record_is_dropped(
    open_index: Opener, tmp_path: Path, tear: Callable[[bytes], bytes]
) -> None:
    index = open_index("flat")
    index.add(make_sentences(10), CORPUS[:10])
    acknowledged = state(index)
    index.add(make_sentences(1, start=10), CORPUS[10:11])
    index.close()
    wal = index_dir(tmp_path) / WAL_FILE
    wal.write_bytes(tear(wal.read_bytes()))

    again = open_index("flat")
    assert state(again) == acknowledged and again.get("s10") is None
    again.add(make_sentences(1, start=11), CORPUS[11:12])  # lands after the cut, not after garbage
    after = state(again)
    again.close()
    assert state(open_index("flat")) == after


def test_damaged_log_record_before_intact_ones_refuses_to_start(open_index: Opener, tmp_path: Path) -> None:
    index = open_index("flat")
    index.add(make_sentences(10), CORPUS[:10])
    index.add(make_sentences(10, start=10), CORPUS[10:20])
    index.close()
    flip_byte(index_dir(tmp_path) / WAL_FILE, 40)
    with pytest.raises(
        StartupError, match=r"wal\.log: damaged record at byte 0 with intact records after it"
    ):
        open_index("flat")


@pytest.mark.parametrize("name", [INDEX_FILE, SENTENCES_FILE])
def test_damaged_snapshot_file_refuses_to_start(open_index: Opener, tmp_path: Path, name: str) -> None:
    index = filled(open_index, "flat", 50)
    index.save()
    index.close()
    flip_byte(snapshot_dir(tmp_path) / name, 60)
    with pytest.raises(StartupError, match=rf"{name}: sha256 does not match"):
        open_index("flat")


def test_edited_manifest_refuses_to_start(open_index: Opener, tmp_path: Path) -> None:
    open_index("flat").close()
    path = index_dir(tmp_path) / MANIFEST
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "version": 7}))
    with pytest.raises(StartupError, match=r"manifest\.json: checksum mismatch"):
        open_index("flat")


def test_index_of_another_model_repository_refuses_to_start(open_index: Opener) -> None:
    open_index("flat").close()
    with pytest.raises(
        StartupError, match=r"another model repository.*fingerprint fp-test-repo.*fingerprint other"
    ):
        open_index("flat", fingerprint="other")
    with pytest.raises(StartupError, match=r"dim 32; the repository has .* dim 16"):
        open_index("flat", dim=16)


def test_crash_mid_save_loses_nothing(open_index: Opener, tmp_path: Path) -> None:
    index = filled(open_index, "flat", 100)
    index.delete(["s1"])
    before = state(index)
    index.close()
    # A save that died before its manifest commit leaves a half-written snapshot and a temp manifest.
    leftover = index_dir(tmp_path) / "snapshot-000000000099-deadbeef"
    leftover.mkdir()
    (leftover / INDEX_FILE).write_bytes(b"half")
    (index_dir(tmp_path) / (MANIFEST + ".tmp")).write_text("{")
    again = open_index("flat")
    assert state(again) == before
    assert not leftover.exists() and not (index_dir(tmp_path) / (MANIFEST + ".tmp")).exists()


def test_crash_between_snapshot_commit_and_log_reset_replays_nothing_twice(
    open_index: Opener, tmp_path: Path
) -> None:
    index = filled(open_index, "flat", 100)
    index.delete(["s1"])
    before = state(index)
    wal = index_dir(tmp_path) / WAL_FILE
    logged = wal.read_bytes()
    index.save()
    index.close()
    wal.write_bytes(logged)  # as if the crash came right after the manifest rename
    again = open_index("flat")
    assert state(again) == before


# ---------------------------------------------------------------------------------------- operations


def test_reopening_with_other_params_keeps_the_built_structure(open_index: Opener) -> None:
    index = open_index("ivf", ivf_nprobe=4)
    index.add(make_sentences(1500), CORPUS[:1500])
    index.save()
    index.close()
    again = open_index("hnsw", ivf_nprobe=32)
    stats = again.stats()
    assert stats["kind"] == "ivf" and stats["params"]["ivf_nlist"] == 32
    assert stats["params"]["ivf_nprobe"] == 32  # a search-time knob: the requested value applies
    assert stats["requested_params"]["kind"] == "hnsw"
    assert (
        "built as ivf(nlist=32)" in stats["params_note"] and "hnsw(m=32) is ignored" in stats["params_note"]
    )
    assert len(again.search(QUERIES, 10)[0]) == 10


def test_version_moves_on_each_change_only(open_index: Opener) -> None:
    index = open_index("flat")
    assert index.version == 0
    index.add([], np.zeros((0, DIM), np.float32))
    assert index.version == 0
    index.add(make_sentences(5), CORPUS[:5])
    index.delete(["s0", "s0"])
    assert index.version == 2 and len(index) == 4
    index.save()
    assert index.version == 2


def test_folder_is_locked_while_open_and_closed_index_refuses(open_index: Opener) -> None:
    index = open_index("flat")
    with pytest.raises(StartupError, match="open in another process"):
        open_index("flat")
    index.close()
    with pytest.raises(Unavailable):
        index.search(QUERIES, 3)
    open_index("flat")


def test_searches_run_alongside_adds(open_index: Opener) -> None:
    index = open_index("hnsw")
    index.add(make_sentences(100), CORPUS[:100])
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            try:
                for hits in index.search(QUERIES[:4], 10, {"de", "en"}):
                    assert len(hits) == 10 and [h.score for h in hits] == sorted(
                        (h.score for h in hits), reverse=True
                    )
            except BaseException as exc:  # surfaced below, in the test thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for start in range(100, 1000, 100):
        index.add(make_sentences(100, start=start), CORPUS[start : start + 100])
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(index) == 1000 and index.version == 10
