"""FAISS index of sentences: nearest-neighbour search by inner product over fused, L2-normalised vectors.

The only module that imports faiss. Files and the log live in `index_store` and `index_wal`.

Design choices, and why:

* Internal ids are rows: vector i of the FAISS index is row i of the sentence store, because every
  kind (flat, IVF with an array direct map, HNSW) numbers vectors in add order. Deletes only mark a
  row dead (a tombstone) and searches exclude dead rows with an `IDSelectorBitmap`; `save()` compacts.
  One mechanism for all kinds, since HNSW cannot remove vectors at all, and deletes stay O(ids).
* Language filters are the same bitmap (alive AND lang in wanted), applied *inside* the FAISS search,
  so k hits come back even for a language holding 1% of the index.
* IVF trains once the stored vectors reach `TRAIN_POINTS_PER_LIST * nlist` (39 per list is where
  faiss' k-means stops warning about too few points). Until then vectors live in an exact
  IndexFlatIP, so a new IVF index answers (exactly) from its first add.
* Approximate kinds search exactly (a selector scan of the raw vectors) when the allowed rows are few:
  at most `EXACT_MAX_ROWS`, or at most `EXACT_MAX_FRACTION` of the stored vectors. Graph and cluster
  search miss most neighbours under such narrow filters, while the exact scan is cheap there. A query
  whose approximate search still came back short is redone exactly.
* An existing index keeps the structure it was built with (kind, ivf_nlist, hnsw_m): rebuilding a
  large index silently at start-up would be a surprise. Search-time knobs (ivf_nprobe,
  hnsw_ef_search) cost nothing to change, so the requested ones apply. `stats()` shows both sets and
  a `params_note` when they differ.
* Durability: every add/delete is in the write-ahead log (fsynced) before it returns; `save()` writes
  a snapshot, commits it by replacing the manifest, then empties the log. Log records carry the
  version they produce, so records already inside a snapshot are skipped on replay.
* Concurrency: a write-preferring read/write lock. Searches run together (FAISS searches are const
  and release the GIL); add, delete and compaction run alone.
* Hubness rescoring (service/hubness.py) needs r_y per sentence: the mean cosine to its
  `NEIGHBOURHOOD_K` nearest other live sentences, found with the index's own search (exact on flat;
  IVF/HNSW as approximate as any of their searches). An add computes it for the new rows against the
  index as it is then (new batch included), so log replay reproduces it exactly; older rows keep
  theirs until `save()`, which recomputes every row when anything changed since the last full pass,
  and persists them in the snapshot. That full pass is one (K+1)-NN search per stored sentence:
  seconds for 10^4 sentences, but O(n^2 d) on a large flat index.
  With a hubness reference (open(reference=...)), r_y is the mean cosine to the `REFERENCE_K` nearest
  reference vectors instead: computed once per added sentence, never stale (it does not depend on the
  other rows), so saves and compaction keep it as it is. The manifest records which source the stored
  means came from (`neighbour_source`); an index opened with another source recomputes them.
* Language centring (service/centering.py) needs each language's mean vector: a per-language sum
  (`LanguageSums`) counted from the stored vectors by the first centred search after opening (3 s at 10^6
  rows; an index never searched centred never pays it), then kept in step by every add and delete. Never
  persisted, so never stale.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from service.centering import MIN_SENTENCES, LanguageSums, center, centred_scores
from service.errors import Conflict, InvalidInput, NotFound, StartupError, Unavailable, XretError
from service.hubness import NEIGHBOURHOOD_K, REFERENCE_K, candidate_count, reference_means
from service.index_store import (
    INDEX_FILE,
    NEIGHBOURHOOD_FILE,
    SENTENCES_FILE,
    WAL_FILE,
    Manifest,
    Row,
    disk_bytes,
    lock_directory,
    read_manifest,
    read_neighbourhood,
    read_sentences,
    remove_stale_snapshots,
    unlock_directory,
    verify_snapshot,
    write_snapshot,
)
from service.index_wal import WriteAheadLog

log = logging.getLogger("xret.index")

IndexKind = Literal["flat", "ivf", "hnsw"]
TRAIN_POINTS_PER_LIST = 39
EXACT_MAX_ROWS = 2048
EXACT_MAX_FRACTION = 0.05
_NAMED_IDS = 10
_SELECTOR_CACHE_SIZE = 64
_COMPACT_CHUNK = 65536
_NEIGHBOURHOOD_CHUNK = 4096  # query rows per neighbourhood search: bounds the [rows, K+1] results and copies


@dataclass
class Sentence:
    """A sentence as clients add it; `metadata` must be JSON-serialisable."""

    id: str
    text: str
    lang: str
    metadata: dict[str, Any] | None = None


@dataclass
class Hit:
    """One search result; `score` is the inner product (= cosine for normalised vectors)."""

    id: str
    text: str
    lang: str
    score: float
    metadata: dict[str, Any] | None


@dataclass
class IndexParams:
    """How the FAISS index is built (kind, ivf_nlist, hnsw_m) and searched (ivf_nprobe, hnsw_ef_search)."""

    kind: IndexKind = "flat"
    ivf_nlist: int = 256
    ivf_nprobe: int = 16
    hnsw_m: int = 32
    hnsw_ef_search: int = 64

    def validate(self, where: str) -> None:
        if self.kind not in ("flat", "ivf", "hnsw"):
            raise StartupError(f"{where}: index kind {self.kind!r}, expected flat, ivf or hnsw")
        for name, low in (("ivf_nlist", 1), ("ivf_nprobe", 1), ("hnsw_m", 2), ("hnsw_ef_search", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise StartupError(f"{where}: {name} must be an integer >= {low}, got {value!r}")

    def structure(self) -> str:
        """What cannot change without a rebuild, as operators would write it."""
        if self.kind == "ivf":
            return f"ivf(nlist={self.ivf_nlist})"
        if self.kind == "hnsw":
            return f"hnsw(m={self.hnsw_m})"
        return "flat"


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers so writes never starve."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class SentenceIndex:
    """Sentences and their vectors in one folder; open with `SentenceIndex.open`."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        params: IndexParams,
        requested: IndexParams,
        index: faiss.Index,
        lock_fd: int,
    ) -> None:
        self._dir = directory
        self._manifest = manifest
        self._dim = manifest.dim
        self._fingerprint = manifest.fingerprint
        self._params = params
        self._requested = requested
        self._faiss: Any = index  # Any: faiss' bundled stubs lag its Python wrappers
        self._lock_fd = lock_fd
        self._version = manifest.version
        self._rows: list[Row | None] = []
        self._row_of: dict[str, int] = {}
        self._lang_code: dict[str, int] = {}
        self._row_lang = np.zeros(0, dtype=np.int32)
        self._alive = np.zeros(0, dtype=bool)
        self._neighbourhood = np.zeros(0, dtype=np.float32)  # r_y per row (hubness rescoring)
        self._neighbourhood_version = 0  # index version of the last full recomputation of every row
        self._keeps_neighbourhood = False  # set by open(neighbourhood=True); off, no r_y is computed or stored
        self._reference: np.ndarray | None = None  # hubness reference vectors: r_y over them (open(reference=...))
        self._neighbour_source = ""  # "" (the index's own rows) or "reference:<id>", as the manifest records it
        self._lang_counts: Counter[str] = Counter()
        self._language_sums: LanguageSums | None = None  # counted by the first centred search, then kept
        self._language_sums_lock = threading.Lock()  # one count when concurrent first searches race
        self._dead = 0
        self._selectors: dict[frozenset[str] | None, tuple[int, Any]] = {}
        self._lock = _ReadWriteLock()
        self._save_lock = threading.Lock()
        self._wal: WriteAheadLog | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        directory: Path,
        dim: int,
        fingerprint: str,
        params: IndexParams,
        neighbourhood: bool = False,
        reference: np.ndarray | None = None,
        reference_id: str = "",
    ) -> SentenceIndex:
        """Load and validate the index in `directory`, or create an empty one there.

        `neighbourhood` keeps the per-sentence neighbourhood means that hubness rescoring needs. It is
        off unless asked for: it costs a k-NN search per added sentence and a full pass (O(n^2 d) on a
        flat index) at every snapshot after a change, which a large index must not pay for nothing.
        `reference` (unit vectors [n, dim], named by `reference_id`) measures them against a hubness
        reference instead (module docstring); it implies `neighbourhood`.
        """
        directory = Path(directory)
        params.validate("index params")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise StartupError(f"index dim must be a positive integer, got {dim!r}")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"{directory}: cannot create the index folder ({exc})") from exc
        kept_reference = _reference_source(reference, reference_id, dim)
        lock_fd = lock_directory(directory)
        index: SentenceIndex | None = None
        try:
            keeps = neighbourhood or reference is not None
            index = cls._load_or_create(directory, dim, fingerprint, params, lock_fd, keeps, kept_reference)
            index._wal = WriteAheadLog(directory / WAL_FILE)
            index._replay()
        except BaseException:
            if index is not None and index._wal is not None:
                index._wal.close()
            unlock_directory(lock_fd)
            raise
        return index

    @classmethod
    def _load_or_create(
        cls,
        directory: Path,
        dim: int,
        fingerprint: str,
        requested: IndexParams,
        lock_fd: int,
        neighbourhood: bool,
        reference: tuple[np.ndarray | None, str],
    ) -> SentenceIndex:
        manifest = read_manifest(directory)
        if manifest is None:
            manifest = Manifest(
                dim=dim,
                fingerprint=fingerprint,
                params=asdict(requested),
                version=0,
                rows=0,
                ivf_trained=False,
                index_id=uuid.uuid4().hex,
                created_at=time.time(),
            )
            index = cls(directory, manifest, requested, requested, _new_faiss(requested, dim), lock_fd)
            index._keeps_neighbourhood = neighbourhood
            index._reference, index._neighbour_source = reference
            index._neighbourhood_version = manifest.version
            index._commit_snapshot()
            log.info("created an empty %s index in %s", requested.structure(), directory)
            return index
        if manifest.fingerprint != fingerprint or manifest.dim != dim:
            raise StartupError(
                f"{directory}: index was built by another model repository (fingerprint "
                f"{manifest.fingerprint}, dim {manifest.dim}; the repository has fingerprint {fingerprint}, "
                f"dim {dim}); rebuild the index from this repository, or point --index / XRET_INDEX at "
                "another folder"
            )
        try:
            stored = IndexParams(**manifest.params)
        except TypeError as exc:
            raise StartupError(f"{directory}/manifest.json: bad params ({exc})") from exc
        stored.validate(f"{directory}/manifest.json")
        params = IndexParams(
            kind=stored.kind,
            ivf_nlist=stored.ivf_nlist,
            hnsw_m=stored.hnsw_m,
            ivf_nprobe=requested.ivf_nprobe,
            hnsw_ef_search=requested.hnsw_ef_search,
        )
        snap = verify_snapshot(directory, manifest)
        faiss_index = _read_faiss(snap / INDEX_FILE, manifest, params)
        rows = read_sentences(snap / SENTENCES_FILE)
        if not len(rows) == faiss_index.ntotal == manifest.rows:
            raise StartupError(
                f"{snap}: {len(rows)} sentences and {faiss_index.ntotal} vectors, manifest says "
                f"{manifest.rows}; the index folder is damaged"
            )
        index = cls(directory, manifest, params, requested, faiss_index, lock_fd)
        index._keeps_neighbourhood = neighbourhood
        index._reference, index._neighbour_source = reference
        index._append_rows(rows)
        if len(index._row_of) + index._dead != len(rows):
            raise StartupError(f"{snap / SENTENCES_FILE}: repeated sentence ids; the index folder is damaged")
        if not neighbourhood:
            pass
        elif NEIGHBOURHOOD_FILE in manifest.files and (manifest.neighbour_k, manifest.neighbour_source) == (
            index._neighbour_k,
            index._neighbour_source,
        ):
            index._neighbourhood[: len(rows)] = read_neighbourhood(snap / NEIGHBOURHOOD_FILE, len(rows))
            index._neighbourhood_version = manifest.version
        else:  # from before rescoring, or another k or source: the next save persists these
            log.info(
                "computing neighbourhood means (k=%d, %s) of %d sentences",
                index._neighbour_k,
                index._neighbour_source or "own rows",
                len(index._row_of),
            )
            index._refresh_neighbourhood()
        remove_stale_snapshots(directory, keep=manifest.snapshot)
        if index.params_note:
            log.warning("%s", index.params_note)
        return index

    def _replay(self) -> None:
        """Apply the log records newer than the snapshot, in order, exactly as they were applied live."""
        assert self._wal is not None
        replayed = 0
        for meta, blob in self._wal.replay():
            version = meta.get("version")
            if not isinstance(version, int) or isinstance(version, bool):
                raise StartupError(f"{self._wal.path}: record without a version; the log is damaged")
            if version <= self._version:
                continue  # already in the snapshot: a crash came between its commit and the log reset
            if version != self._version + 1:
                raise StartupError(
                    f"{self._wal.path}: record version {version} follows version {self._version}; "
                    "records are missing, the index folder is damaged"
                )
            try:
                self._apply_record(meta, blob)
            except (KeyError, TypeError, ValueError, XretError) as exc:
                raise StartupError(
                    f"{self._wal.path}: record version {version} cannot be applied ({exc})"
                ) from exc
            self._version = version
            replayed += 1
        if replayed:
            log.info(
                "replayed %d logged change(s) from %s (now version %d)",
                replayed,
                self._wal.path,
                self._version,
            )

    def _apply_record(self, meta: dict[str, Any], blob: bytes) -> None:
        op = meta["op"]
        if op == "add":
            rows = [_row_from_json(item) for item in meta["rows"]]
            vectors = np.frombuffer(blob, dtype="<f4").reshape(len(rows), self._dim).astype(np.float32)
            taken = [row[0] for row in rows if row[0] in self._row_of]
            if taken or len({row[0] for row in rows}) != len(rows):
                raise ValueError(f"ids already present: {_name(taken)}")
            self._apply_add(rows, vectors)
        elif op == "delete":
            ids = meta["ids"]
            missing = [i for i in ids if i not in self._row_of]
            if missing:
                raise ValueError(f"ids not present: {_name(missing)}")
            self._apply_delete(ids)
        else:
            raise ValueError(f"unknown operation {op!r}")

    # ------------------------------------------------------------------ mutations
    def add(self, sentences: list[Sentence], vectors: np.ndarray) -> None:
        """Store sentences with their vectors: all of them or (on any error) none. Durable on return."""
        matrix = self._check_matrix(vectors, "vectors")
        if not isinstance(sentences, list):
            raise InvalidInput("sentences: expected a list of sentences")
        if len(sentences) != len(matrix):
            raise InvalidInput(f"{len(sentences)} sentences but {len(matrix)} vectors; they must pair up")
        rows = [_to_row(i, s) for i, s in enumerate(sentences)]
        if not rows:
            return
        ids = [row[0] for row in rows]
        repeated = sorted(sid for sid, n in Counter(ids).items() if n > 1)
        if repeated:
            raise Conflict(f"sentence id(s) repeated within the request: {_name(repeated)}")
        with self._lock.write():
            wal = self._check_open()
            taken = [sid for sid in ids if sid in self._row_of]
            if taken:
                raise Conflict(f"sentence id(s) already in the index: {_name(taken)}")
            version = self._version + 1
            wal.append(
                {"op": "add", "version": version, "rows": rows}, matrix.astype("<f4", copy=False).tobytes()
            )
            self._apply_add(rows, matrix)
            self._version = version

    def delete(self, ids: list[str]) -> int:
        """Remove sentences by id: all of them or (when any id is unknown) none. Durable on return."""
        if not isinstance(ids, list) or not all(isinstance(sid, str) for sid in ids):
            raise InvalidInput("ids: expected a list of strings")
        unique = list(dict.fromkeys(ids))
        with self._lock.write():
            wal = self._check_open()
            missing = [sid for sid in unique if sid not in self._row_of]
            if missing:
                raise NotFound(f"unknown sentence id(s): {_name(missing)}; nothing was deleted")
            if not unique:
                return 0
            version = self._version + 1
            wal.append({"op": "delete", "version": version, "ids": unique})
            self._apply_delete(unique)
            self._version = version
        return len(unique)

    def _apply_add(self, rows: Sequence[Row], vectors: np.ndarray) -> None:
        stored = self._faiss.ntotal
        threshold = TRAIN_POINTS_PER_LIST * self._params.ivf_nlist
        if self._params.kind == "ivf" and not self._ivf_trained and stored + len(vectors) >= threshold:
            earlier = self._faiss.reconstruct_n(0, stored) if stored else np.zeros((0, self._dim), np.float32)
            self._faiss = self._train_ivf(np.vstack([earlier, vectors]))
            log.info("trained IVF (nlist=%d) on %d vectors", self._params.ivf_nlist, self._faiss.ntotal)
        else:
            self._faiss.add(vectors)
        self._append_rows(rows)
        if self._language_sums is not None:
            self._language_sums.add([row[2] for row in rows], vectors)
        if self._keeps_neighbourhood:
            new_rows = np.arange(stored, stored + len(rows), dtype=np.int64)
            self._neighbourhood[new_rows] = self._neighbourhood_of(vectors, new_rows)

    def _train_ivf(self, vectors: np.ndarray) -> faiss.Index:
        # index_factory already returns the concrete, owning IndexIVFFlat (downcasting would drop ownership)
        factory = f"IVF{self._params.ivf_nlist},Flat"
        ivf: Any = faiss.index_factory(self._dim, factory, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.make_direct_map(True)  # array map: reconstruct_n for compaction, valid because ids are rows
        ivf.add(vectors)
        ivf.nprobe = min(self._params.ivf_nprobe, self._params.ivf_nlist)
        return ivf

    def _apply_delete(self, ids: Sequence[str]) -> None:
        gone: list[int] = []
        langs: list[str] = []
        for sid in ids:
            row = self._row_of.pop(sid)
            stored = self._rows[row]
            assert stored is not None
            gone.append(row)
            langs.append(stored[2])
            self._rows[row] = None
            self._alive[row] = False
            self._lang_counts[stored[2]] -= 1
            if not self._lang_counts[stored[2]]:
                del self._lang_counts[stored[2]]
            self._dead += 1
        if gone and self._language_sums is not None:  # a tombstoned row keeps its vector in FAISS until compaction
            self._language_sums.remove(langs, self._faiss.reconstruct_batch(np.asarray(gone, dtype=np.int64)))
        self._selectors.clear()

    def _counted_language_sums(self) -> LanguageSums:
        """The per-language sums, counted on first use (caller holds the read lock, so no write runs meanwhile)."""
        with self._language_sums_lock:
            if self._language_sums is None:
                self._language_sums = self._count_language_sums()
            return self._language_sums

    def _count_language_sums(self) -> LanguageSums:
        """Per-language sums from the stored vectors of the live rows, chunk by chunk."""
        sums = LanguageSums(self._dim)
        stored = len(self._rows)
        for start in range(0, stored, _COMPACT_CHUNK):
            end = min(start + _COMPACT_CHUNK, stored)
            alive = self._alive[start:end]
            langs = [row[2] for row in self._rows[start:end] if row is not None]
            sums.add(langs, self._faiss.reconstruct_n(start, end - start)[alive])
        return sums

    def _append_rows(self, rows: Sequence[Row | None]) -> None:
        start = len(self._rows)
        end = start + len(rows)
        if end > len(self._alive):
            capacity = max(end, 2 * len(self._alive), 1024)
            self._alive = np.concatenate([self._alive, np.zeros(capacity - len(self._alive), dtype=bool)])
            self._row_lang = np.concatenate(
                [self._row_lang, np.zeros(capacity - len(self._row_lang), dtype=np.int32)]
            )
            self._neighbourhood = np.concatenate(
                [self._neighbourhood, np.zeros(capacity - len(self._neighbourhood), dtype=np.float32)]
            )
        self._neighbourhood[start:end] = 0.0
        for row_id, row in enumerate(rows, start=start):
            self._rows.append(row)
            if row is None:
                self._alive[row_id] = False
                self._dead += 1
                continue
            self._row_of[row[0]] = row_id
            self._row_lang[row_id] = self._lang_code.setdefault(row[2], len(self._lang_code))
            self._alive[row_id] = True
            self._lang_counts[row[2]] += 1
        self._selectors.clear()

    # ------------------------------------------------------------------ reads
    def search(self, vectors: np.ndarray, k: int, langs: set[str] | None = None) -> list[list[Hit]]:
        """The k best sentences per query row (k clipped to what is available), best first.

        `langs` keeps only those languages; None or empty means all.
        """
        return [hits for hits, _ in self._search(vectors, k, langs)]

    def search_with_neighbourhood(
        self, vectors: np.ndarray, k: int, langs: set[str] | None = None
    ) -> list[tuple[list[Hit], np.ndarray]]:
        """`search`, plus each hit's neighbourhood mean r_y (float64, one per hit) for hubness rescoring.

        Read under the same lock as the hits, so a concurrent delete cannot leave a hit without its r_y.
        """
        if not self._keeps_neighbourhood:
            raise InvalidInput("rescoring needs neighbourhood statistics, which this index does not keep")
        return self._search(vectors, k, langs)

    def search_centred(self, vectors: np.ndarray, k: int, langs: set[str] | None, query_lang: str) -> list[list[Hit]]:
        """Language-centred search (service/centering.py) for query rows all in `query_lang`.

        The queries are centred on their language's mean; the best `candidate_count(k)` rows by inner product
        with them are re-ranked by the centred cosine, each candidate minus its own language's mean. Means,
        candidates and their vectors are read under one lock, so a concurrent write cannot split them.
        """
        queries = self._checked_queries(vectors, k, langs)
        with self._lock.read():
            self._check_open()
            sums = self._counted_language_sums()
            means = sums.means([query_lang, *self._lang_counts])
            if query_lang not in means:
                raise InvalidInput(
                    f"query_lang: centring on {query_lang!r} needs at least {MIN_SENTENCES} indexed sentences in "
                    f"that language to estimate its mean; the index has {sums.count(query_lang)}"
                )
            centred = center(queries, means[query_lang])
            allowed, selector = self._selector(langs)
            wanted = min(candidate_count(k), allowed)
            if wanted == 0 or not len(queries):
                return [[] for _ in range(len(queries))]
            _, labels = self._top(centred, wanted, selector, allowed)
            out: list[list[Hit]] = []
            for query, found in zip(centred, labels, strict=True):
                live = [(i, row) for i in found.tolist() if i >= 0 and (row := self._rows[i]) is not None]
                if not live:
                    out.append([])
                    continue
                rows = [row for _, row in live]
                stored = self._faiss.reconstruct_batch(np.asarray([i for i, _ in live], dtype=np.int64))
                scores = centred_scores(query, stored, [row[2] for row in rows], means)
                best = np.argsort(-scores, kind="stable")[:k]
                out.append([self._hit(rows[i], float(scores[i])) for i in best.tolist()])
            return out

    @property
    def keeps_neighbourhood(self) -> bool:
        """Whether r_y is kept (open(neighbourhood=True)), so searches may be rescored."""
        return self._keeps_neighbourhood

    @property
    def _neighbour_k(self) -> int:
        """k of r_y: REFERENCE_K against a hubness reference, NEIGHBOURHOOD_K among the index's own rows."""
        return REFERENCE_K if self._reference is not None else NEIGHBOURHOOD_K

    def _checked_queries(self, vectors: np.ndarray, k: int, langs: set[str] | None) -> np.ndarray:
        queries = self._check_matrix(vectors, "query vectors")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        if langs is not None and (isinstance(langs, str) or not all(isinstance(lang, str) for lang in langs)):
            raise InvalidInput("langs: expected language codes (strings)")
        return queries

    def _search(self, vectors: np.ndarray, k: int, langs: set[str] | None) -> list[tuple[list[Hit], np.ndarray]]:
        queries = self._checked_queries(vectors, k, langs)
        with self._lock.read():
            self._check_open()
            allowed, selector = self._selector(langs)
            k = min(k, allowed)
            if k == 0 or not len(queries):
                return [([], np.zeros(0)) for _ in range(len(queries))]
            scores, labels = self._top(queries, k, selector, allowed)
            return [self._hits(s, lab) for s, lab in zip(scores, labels, strict=True)]

    def _top(self, queries: np.ndarray, k: int, selector: Any, allowed: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and rows of the k best allowed rows per query: exact or approximate, as `search` decides."""
        if self._exact_is_better(allowed):
            return self._search_exact(queries, k, selector)
        scores, labels = self._search_approximate(queries, k, selector)
        short = np.flatnonzero((labels < 0).any(axis=1))
        if short.size:
            scores[short], labels[short] = self._search_exact(queries[short], k, selector)
        return scores, labels

    def _neighbourhood_of(self, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """r of stored `rows` (whose vectors are given): mean cosine to their K nearest other live rows.

        Asks for K + 1 neighbours and drops the row itself by position (an exact duplicate elsewhere
        still counts); a row with fewer live neighbours averages those it has, and with none gets 0,
        as `service.hubness.neighbourhood_means` does. With a hubness reference: the mean cosine to the
        REFERENCE_K nearest reference vectors (`service.hubness.reference_means`), whatever else is stored.
        """
        if self._reference is not None:
            return reference_means(vectors, self._reference)
        out = np.zeros(len(rows), dtype=np.float32)
        allowed, selector = self._selector(None)
        want = min(NEIGHBOURHOOD_K + 1, allowed)
        if want < 1:
            return out
        for start in range(0, len(rows), _NEIGHBOURHOOD_CHUNK):
            own = rows[start : start + _NEIGHBOURHOOD_CHUNK]
            queries = np.ascontiguousarray(vectors[start : start + _NEIGHBOURHOOD_CHUNK], dtype=np.float32)
            scores, labels = self._top(queries, want, selector, allowed)
            keep = (labels >= 0) & (labels != own[:, None])
            keep &= np.cumsum(keep, axis=1) <= NEIGHBOURHOOD_K
            counts = keep.sum(axis=1)
            sums = np.where(keep, scores, 0.0).sum(axis=1, dtype=np.float64)
            out[start : start + len(own)] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        return out

    def _refresh_neighbourhood(self) -> None:
        """Recompute r of every live row against the index as it is now (reads only: a read lock is enough).

        The new array replaces the old one in one assignment, so concurrent searches see either.
        """
        stored = len(self._rows)
        live = np.flatnonzero(self._alive[:stored])
        fresh = np.zeros(len(self._neighbourhood), dtype=np.float32)
        for start in range(0, len(live), _COMPACT_CHUNK):
            rows = live[start : start + _COMPACT_CHUNK]
            vectors = np.asarray(self._faiss.reconstruct_batch(rows), dtype=np.float32)
            fresh[rows] = self._neighbourhood_of(vectors, rows)
        self._neighbourhood = fresh
        self._neighbourhood_version = self._version

    def get(self, id: str) -> Sentence | None:
        """The stored sentence, or None when no sentence has this id."""
        if not isinstance(id, str):
            raise InvalidInput(f"id: expected a string, got {type(id).__name__}")
        with self._lock.read():
            row_id = self._row_of.get(id)
            row = None if row_id is None else self._rows[row_id]
        if row is None:
            return None
        return Sentence(row[0], row[1], row[2], _load_metadata(row[3]))

    def vectors(self, ids: list[str]) -> np.ndarray:
        """The stored vectors of sentences by id, in the order given ([len(ids), dim] float32).

        Per-request fusion reads members back out of the stored fused vectors (see service/fusion.py);
        every kind keeps the raw vectors (IVF through its array direct map), so this is exact.
        """
        if not isinstance(ids, list) or not all(isinstance(sid, str) for sid in ids):
            raise InvalidInput("ids: expected a list of strings")
        with self._lock.read():
            self._check_open()
            missing = [sid for sid in ids if sid not in self._row_of]
            if missing:
                raise NotFound(f"unknown sentence id(s): {_name(missing)}")
            rows = np.fromiter((self._row_of[sid] for sid in ids), dtype=np.int64, count=len(ids))
            if not rows.size:
                return np.zeros((0, self._dim), dtype=np.float32)
            return np.asarray(self._faiss.reconstruct_batch(rows), dtype=np.float32)

    def _selector(self, langs: set[str] | None) -> tuple[int, Any]:
        """(rows a search may return, FAISS selector or None), cached until the next mutation."""
        key = frozenset(langs) if langs else None
        if key is None and not self._dead:
            return len(self._row_of), None
        cached = self._selectors.get(key)
        if cached is not None:
            return cached
        stored = len(self._rows)
        mask = self._alive[:stored].copy()
        if key is not None:
            codes = [self._lang_code[lang] for lang in key if lang in self._lang_code]
            mask &= np.isin(self._row_lang[:stored], codes)
        allowed = int(mask.sum())
        # The one-argument form keeps a reference to the bitmap the selector points at.
        selector = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))  # type: ignore[call-arg,arg-type]
        entry = (allowed, selector)
        if len(self._selectors) >= _SELECTOR_CACHE_SIZE:
            self._selectors.clear()
        self._selectors[key] = entry
        return entry

    @property
    def _approximate(self) -> bool:
        return self._params.kind == "hnsw" or self._ivf_trained

    @property
    def _ivf_trained(self) -> bool:
        return isinstance(self._faiss, faiss.IndexIVFFlat)

    def _exact_is_better(self, allowed: int) -> bool:
        return not self._approximate or allowed <= max(
            EXACT_MAX_ROWS, EXACT_MAX_FRACTION * self._faiss.ntotal
        )

    def _search_exact(self, queries: np.ndarray, k: int, selector: Any) -> tuple[np.ndarray, np.ndarray]:
        index = self._faiss
        params: Any = faiss.SearchParameters()
        if isinstance(index, faiss.IndexIVFFlat):
            params = faiss.SearchParametersIVF()
            params.nprobe = index.nlist
        elif isinstance(index, faiss.IndexHNSWFlat):
            index = faiss.downcast_index(index.storage)  # the raw vectors, same row numbering
        if selector is not None:
            params.sel = selector
        return index.search(queries, k, params=params)

    def _search_approximate(
        self, queries: np.ndarray, k: int, selector: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        p = self._params
        params: Any
        if isinstance(self._faiss, faiss.IndexIVFFlat):
            params = faiss.SearchParametersIVF()
            params.nprobe = min(p.ivf_nprobe, p.ivf_nlist)
        else:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(p.hnsw_ef_search, k)
        if selector is not None:
            params.sel = selector
        return self._faiss.search(queries, k, params=params)

    def _hits(self, scores: np.ndarray, labels: np.ndarray) -> tuple[list[Hit], np.ndarray]:
        hits = []
        found = []
        for score, label in zip(scores.tolist(), labels.tolist(), strict=True):
            row = self._rows[label] if label >= 0 else None
            if row is not None:
                hits.append(self._hit(row, float(score)))
                found.append(label)
        return hits, self._neighbourhood[np.asarray(found, dtype=np.int64)].astype(np.float64)

    @staticmethod
    def _hit(row: Row, score: float) -> Hit:
        return Hit(row[0], row[1], row[2], score, _load_metadata(row[3]))

    # ------------------------------------------------------------------ persistence
    def save(self) -> None:
        """Compact deleted rows, write a snapshot, commit it, empty the log.

        Searches keep running while the files are written (only compaction excludes them);
        mutations wait, since the log is emptied at the end.
        """
        with self._save_lock:
            with self._lock.write():
                self._check_open()
                if self._dead:
                    self._compact()
            with self._lock.read():
                wal = self._check_open()
                keeps = self._keeps_neighbourhood
                stale = self._neighbourhood_version != self._version and self._reference is None
                if keeps and stale:  # against a reference, no row's r_y depends on the others: never stale
                    self._refresh_neighbourhood()
                m = self._manifest
                unchanged = (m.version, m.rows, m.params, m.neighbour_k, m.neighbour_source) == (
                    self._version,
                    len(self._rows),
                    asdict(self._params),
                    self._neighbour_k if keeps else m.neighbour_k,
                    self._neighbour_source if keeps else m.neighbour_source,
                ) and (NEIGHBOURHOOD_FILE in m.files or not keeps)
                if not unchanged:
                    self._commit_snapshot()
                if wal.size:
                    wal.truncate()

    def _commit_snapshot(self) -> None:
        manifest = Manifest(
            dim=self._dim,
            fingerprint=self._fingerprint,
            params=asdict(self._params),
            version=self._version,
            rows=len(self._rows),
            ivf_trained=self._ivf_trained,
            index_id=self._manifest.index_id,
            created_at=self._manifest.created_at,
            neighbour_k=self._neighbour_k if self._keeps_neighbourhood else 0,
            neighbour_source=self._neighbour_source if self._keeps_neighbourhood else "",
        )
        index = self._faiss
        neighbourhood = self._neighbourhood[: len(self._rows)].copy() if self._keeps_neighbourhood else None
        self._manifest = write_snapshot(
            self._dir, manifest, lambda path: faiss.write_index(index, str(path)), self._rows, neighbourhood
        )

    def _compact(self) -> None:
        """Rebuild without dead rows (HNSW cannot remove vectors; the others would shift ids)."""
        stored = len(self._rows)
        keep = np.flatnonzero(self._alive[:stored])
        blocks = []
        for start in range(0, stored, _COMPACT_CHUNK):
            end = min(start + _COMPACT_CHUNK, stored)
            blocks.append(self._faiss.reconstruct_n(start, end - start)[self._alive[start:end]])
        vectors = np.vstack(blocks) if blocks else np.zeros((0, self._dim), np.float32)
        if self._ivf_trained:
            rebuilt: Any = faiss.clone_index(self._faiss)
            rebuilt.reset()  # keeps the trained centroids and the array direct map
        else:
            rebuilt = _new_faiss(self._params, self._dim)
        rebuilt.add(vectors)
        rows = [self._rows[i] for i in keep.tolist()]
        kept_neighbourhood = self._neighbourhood[keep].copy()  # stale (a delete bumped the version): save recomputes
        log.info("compacted the index: %d deleted rows dropped, %d kept", self._dead, len(rows))
        self._faiss = rebuilt
        self._rows, self._row_of, self._lang_counts, self._dead = [], {}, Counter(), 0
        self._append_rows(rows)
        self._neighbourhood[: len(rows)] = kept_neighbourhood

    def close(self) -> None:
        """Release the log and the folder lock; changes are already durable (`save()` first: faster start)."""
        with self._lock.write():
            if self._closed:
                return
            self._closed = True
            if self._wal is not None:
                self._wal.close()
            unlock_directory(self._lock_fd)

    def _check_open(self) -> WriteAheadLog:
        if self._closed or self._wal is None:
            raise Unavailable("the index is closed")
        return self._wal

    # ------------------------------------------------------------------ facts
    @property
    def version(self) -> int:
        """Bumped by every add and delete and persisted: cached search results are keyed by it."""
        return self._version

    @property
    def state_key(self) -> str:
        """Index identity plus version: a rebuilt index (version back at 0) never reuses cached results."""
        return f"{self._manifest.index_id}:{self._version}"

    @property
    def params_note(self) -> str | None:
        """Why the effective params differ from the requested ones, or None when they do not."""
        if self._params.structure() == self._requested.structure():
            return None
        return (
            f"index in {self._dir} was built as {self._params.structure()}; the requested "
            f"{self._requested.structure()} is ignored (build the index in a new folder to change it)"
        )

    def __len__(self) -> int:
        return len(self._row_of)

    def languages(self) -> dict[str, int]:
        """Sentences per language."""
        with self._lock.read():
            return dict(self._lang_counts)

    def stats(self) -> dict[str, Any]:
        """Operational figures for /stats."""
        with self._lock.read():
            return {
                "kind": self._params.kind,
                "params": asdict(self._params),
                "requested_params": asdict(self._requested),
                "params_note": self.params_note,
                "size": len(self._row_of),
                "stored_rows": len(self._rows),
                "deleted_pending_compaction": self._dead,
                "ivf_trained": self._ivf_trained,
                "neighbourhood_k": self._neighbour_k,
                "neighbourhood_source": self._neighbour_source or "own rows",
                # against a reference every row's r_y is current as soon as it is added
                "neighbourhood_version": self._version if self._reference is not None else self._neighbourhood_version,
                "dim": self._dim,
                "languages": dict(self._lang_counts),
                "version": self._version,
                "saved_version": self._manifest.version,
                "fingerprint": self._fingerprint,
                "index_id": self._manifest.index_id,
                "directory": str(self._dir),
                "disk_bytes": disk_bytes(self._dir, self._manifest),
                "wal_bytes": (self._dir / WAL_FILE).stat().st_size if (self._dir / WAL_FILE).exists() else 0,
            }

    def _check_matrix(self, vectors: Any, what: str) -> np.ndarray:
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[1] != self._dim:
            shape = list(vectors.shape) if isinstance(vectors, np.ndarray) else type(vectors).__name__
            raise InvalidInput(f"{what}: expected an array of shape [n, {self._dim}], got {shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise InvalidInput(f"{what}: expected float32 values, got {vectors.dtype}")
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if bad.size:
            raise InvalidInput(f"{what}: rows {bad[:_NAMED_IDS].tolist()} hold NaN or infinite values")
        return matrix


def _reference_source(reference: np.ndarray | None, reference_id: str, dim: int) -> tuple[np.ndarray | None, str]:
    """The reference as the index keeps it (float32, C order) and its manifest name; a bad one refuses to open."""
    if reference is None:
        return None, ""
    vectors = np.ascontiguousarray(reference, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim or not len(vectors):
        raise StartupError(f"hubness reference: expected vectors of shape [n >= 1, {dim}], got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise StartupError("hubness reference: its vectors hold NaN or inf values")
    if not reference_id:
        raise StartupError("hubness reference: a reference_id is needed to tell its stored means from others'")
    return vectors, f"reference:{reference_id}"


def _new_faiss(params: IndexParams, dim: int) -> faiss.Index:
    """An empty index of the kind; IVF starts as exact flat storage until it can be trained."""
    if params.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = params.hnsw_ef_search
        return index
    return faiss.IndexFlatIP(dim)


def _read_faiss(path: Path, manifest: Manifest, params: IndexParams) -> faiss.Index:
    try:
        index: Any = faiss.read_index(str(path))  # already the concrete, owning type
    except RuntimeError as exc:
        raise StartupError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from exc
    expected: Any = faiss.IndexFlat
    if params.kind == "hnsw":
        expected = faiss.IndexHNSWFlat
    elif params.kind == "ivf" and manifest.ivf_trained:
        expected = faiss.IndexIVFFlat
    if (
        not isinstance(index, expected)
        or index.d != manifest.dim
        or index.metric_type != faiss.METRIC_INNER_PRODUCT
    ):
        raise StartupError(
            f"{path}: holds {type(index).__name__} (dim {index.d}), the manifest expects an inner-product "
            f"{expected.__name__} of dim {manifest.dim}; the index folder is damaged"
        )
    if isinstance(index, faiss.IndexIVFFlat):
        index.make_direct_map(True)  # array map (ids are rows): cheap, and reconstruct_n needs it
        index.nprobe = min(params.ivf_nprobe, params.ivf_nlist)
    elif isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = params.hnsw_ef_search
    return index


def _to_row(i: int, sentence: Any) -> Row:
    """Check one sentence and serialise its metadata once (the form the log and snapshot store)."""
    if not isinstance(sentence, Sentence):
        raise InvalidInput(f"sentences[{i}]: expected a Sentence, got {type(sentence).__name__}")
    if not isinstance(sentence.id, str) or not sentence.id:
        raise InvalidInput(f"sentences[{i}].id: must be a non-empty string, got {sentence.id!r}")
    if not isinstance(sentence.text, str):
        raise InvalidInput(f"sentences[{i}].text: must be a string")
    if not isinstance(sentence.lang, str) or not sentence.lang:
        raise InvalidInput(f"sentences[{i}].lang: must be a non-empty string, got {sentence.lang!r}")
    metadata = None
    if sentence.metadata is not None:
        if not isinstance(sentence.metadata, dict):
            raise InvalidInput(f"sentences[{i}].metadata: must be an object (dict) or absent")
        try:
            metadata = json.dumps(
                sentence.metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"sentences[{i}].metadata: not JSON-serialisable ({exc})") from exc
    fields = {"id": sentence.id, "text": sentence.text, "lang": sentence.lang, "metadata": metadata}
    for name, value in fields.items():
        check_utf8(value, f"sentences[{i}].{name}")
    return (sentence.id, sentence.text, sentence.lang, metadata)


def check_utf8(value: str | None, where: str) -> None:
    """Lone surrogates (legal in JSON \\u escapes) cannot be written as UTF-8: refuse them up front,
    or they would fail the log append here and every later snapshot (and the tokenizer, for texts)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{where}: not valid Unicode text (unpaired surrogate at {exc.start})") from exc


def _row_from_json(item: Any) -> Row:
    if not (isinstance(item, list) and len(item) == 4 and all(isinstance(v, str) for v in item[:3])):
        raise ValueError(f"malformed sentence {item!r}")
    if item[3] is not None and not isinstance(item[3], str):
        raise ValueError(f"malformed metadata {item[3]!r}")
    return (item[0], item[1], item[2], item[3])


def _load_metadata(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


def _name(ids: Sequence[str]) -> str:
    """Ids for an error message: the first few by name, the rest counted."""
    named = ", ".join(repr(sid) for sid in ids[:_NAMED_IDS])
    return named + (f" and {len(ids) - _NAMED_IDS} more" if len(ids) > _NAMED_IDS else "")
