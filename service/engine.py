"""The engine: cache -> ensemble (micro-batched) -> index. The only thing the front ends call.

Everything a client can get wrong is validated here, once, so REST and gRPC answer the same
request with the same error. Blocking work (FAISS, index writes) runs in worker threads so the
event loop keeps accepting requests while a batch is encoded. Concurrent searches that agree on k,
languages, fusion and rescoring share one index search (service/search_batching.py), so one scan serves
them all. Hubness rescoring (service/hubness.py) re-ranks the top max(10k, 100) cosine candidates with
the neighbourhood densities the index stores per sentence.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from service.batching import MicroBatcher
from service.cache import Cache, cache_key, decode_vector, encode_vector, make_cache
from service.config import CPU_BATCHING, Batching, Settings, resolve_batching, resolve_spinning
from service.encoders import load_encoders
from service.encoders.onnx import CUDA as CUDA_PROVIDER
from service.ensemble import Ensemble, normalized_weights
from service.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
    StartupError,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from service.fusion import (
    Fusion,
    FusionOverride,
    resolve_fusion,
    reweighted_queries,
    rrf_candidates,
    rrf_rerank,
    stored_layout,
)
from service.hubness import NEIGHBOURHOOD_K, RESCORE_METHODS, candidate_count, query_means, rescore
from service.hubness_reference import embed_reference, read_reference
from service.index import Hit, IndexParams, Sentence, SentenceIndex, check_utf8
from service.metrics import EncoderTokens, Metrics
from service.repository import Repository, load_repository
from service.search_batching import SearchCoalescer

log = logging.getLogger("xret.engine")

LANG_RE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{1,8})?$")
RRF_ATTEMPTS = 3  # candidate search + vector read-back, redone when a concurrent delete lands in between
Item = tuple[list[int], ...]


@dataclass(frozen=True)
class SearchKey:
    """What a fused search depends on besides its query rows: requests with equal keys share one search."""

    k: int
    langs: tuple[str, ...]  # sorted; empty means every language
    fusion: Fusion
    rescore: str = "none"  # hubness rescoring method, as `Engine.rescore_for` resolved it
    query_lang: str = ""  # language-centred search on this query language ("" = plain)


@dataclass
class EmbedResult:
    """Fused embeddings in request order plus the token count OpenAI-style clients bill by."""

    vectors: np.ndarray
    tokens: int


class Engine:
    """Owns the repository, encoders, batcher, index and cache for one service process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.repo: Repository | None = None
        self.batching: Batching = CPU_BATCHING  # resolved for the members' device at start()
        self._ensemble: Ensemble | None = None
        self._batcher: MicroBatcher[Item, np.ndarray] | None = None
        self._searcher: SearchCoalescer[SearchKey, list[Hit]] | None = None
        self._index: SentenceIndex | None = None
        self._cache: Cache | None = None
        self._write_lock = asyncio.Lock()
        self._snapshotter: asyncio.Task[None] | None = None
        self._token_counts: EncoderTokens | None = None
        self.started_at = 0.0

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Load and validate everything; any problem raises StartupError with one clear line."""
        s = self.settings
        repo = load_repository(s.repo)
        fusion = repo.ensemble.fusion
        if s.search_rescore != "none" and fusion.method == "rrf":
            raise StartupError(
                f"search_rescore={s.search_rescore!r} needs searches scored by cosine, but the repository {s.repo} "
                "fuses by rrf (rank scores); set search_rescore to none, or let requests ask for rescoring "
                "together with a cosine fusion (concat / score_sum)"
            )
        encoders = load_encoders(
            repo,
            device=s.device,
            threads=s.intra_op_threads,
            spinning=resolve_spinning(s, len(repo.members)),
            padding_slack=s.padding_slack,
            bucketing=s.bucketing,
            disabled_optimizers=s.disabled_optimizers,
            pack_tokens=s.pack_tokens,
        )
        self._ensemble = Ensemble(encoders, fusion.method, fusion.resolved_weights(len(encoders)))
        reference = read_reference(s.hubness_reference, s.max_chars_per_text) if s.hubness_reference else None
        for enc in encoders:
            enc.warmup()
        reference_vectors = None
        if reference is not None:  # after warm-up: batches are cut by the calibrated call costs
            reference_vectors = await asyncio.to_thread(embed_reference, self._ensemble, reference[0])
            for enc in encoders:
                enc.tokens.reset()  # the reference is start-up work, not served tokens
        self._index = SentenceIndex.open(
            s.index,
            dim=repo.ensemble.dim,
            fingerprint=repo.fingerprint,
            params=IndexParams(
                kind=s.index_kind,
                ivf_nlist=s.ivf_nlist,
                ivf_nprobe=s.ivf_nprobe,
                hnsw_m=s.hnsw_m,
                hnsw_ef_search=s.hnsw_ef_search,
            ),
            neighbourhood=s.neighbourhood_stats or s.search_rescore != "none",
            reference=reference_vectors,
            reference_id=reference[1] if reference is not None else "",
        )
        self._token_counts = EncoderTokens(encoders)
        self.metrics.registry.register(self._token_counts)
        on_cuda = any(enc.describe().get("provider") == CUDA_PROVIDER for enc in encoders)
        self.batching = resolve_batching(s, on_cuda)
        self._batcher = MicroBatcher(
            self._ensemble.run,
            Ensemble.cost,
            max_batch_cost=self.batching.max_batch_tokens,
            max_batch_size=self.batching.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            queue_size=s.queue_size,
            metrics=self.metrics,
            concurrency=self.batching.concurrency,
        )
        await self._batcher.start()
        self._searcher = SearchCoalescer(
            self._search_group,
            max_wait_ms=s.search_max_wait_ms,
            concurrency=s.search_concurrency,
            metrics=self.metrics,
        )
        await self._searcher.start()
        self._cache = make_cache(s.redis_url, s.cache_ttl_s, s.cache_size)
        self.repo = repo
        self.metrics.index_size.set(len(self._index))
        self.started_at = time.time()
        if s.snapshot_interval_s > 0:
            self._snapshotter = asyncio.create_task(self._snapshot_loop(s.snapshot_interval_s))

    async def _snapshot_loop(self, interval_s: float) -> None:
        """Compact the write-ahead log now and then, so restarts replay little and the log stays small."""
        while True:
            await asyncio.sleep(interval_s)
            if self._index is None:
                return
            try:
                async with self._write_lock:
                    await asyncio.to_thread(self._index.save)
            except Exception:  # a failed compaction loses nothing (the log is intact); retry next time
                log.exception("index snapshot failed; the write-ahead log still holds every change")

    async def stop(self) -> None:
        """Drain the batcher, compact the index to a snapshot, close the cache."""
        if self._snapshotter is not None:
            self._snapshotter.cancel()
        if self._batcher is not None:
            await self._batcher.stop()
        if self._searcher is not None:
            await self._searcher.stop()
        if self._index is not None:
            async with self._write_lock:
                await asyncio.to_thread(self._index.save)
            self._index.close()
        if self._cache is not None:
            await self._cache.close()
        if self._ensemble is not None:
            self._ensemble.close()
        if self._token_counts is not None:
            self.metrics.registry.unregister(self._token_counts)
            self._token_counts = None
        self.repo = None

    # ------------------------------------------------------------------- helpers
    def _parts(self) -> tuple[Repository, Ensemble, MicroBatcher[Item, np.ndarray], SentenceIndex, Cache]:
        if (
            self.repo is None
            or self._ensemble is None
            or self._batcher is None
            or self._index is None
            or self._cache is None
        ):
            raise Unavailable("engine is not started")
        return self.repo, self._ensemble, self._batcher, self._index, self._cache

    @property
    def model_name(self) -> str:
        """Name clients pass as OpenAI `model`: the repository folder name."""
        return self.settings.repo.resolve().name

    def validate_texts(self, texts: list[str], what: str) -> None:
        """Same limits for every endpoint and transport; messages name the limit that was hit."""
        s = self.settings
        if not texts:
            raise InvalidInput(f"{what}: at least one text is required")
        if len(texts) > s.max_texts_per_request:
            raise TooLarge(f"{what}: {len(texts)} texts, the limit is max_texts_per_request={s.max_texts_per_request}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"{what}[{i}]: must be a string")
            if not text.strip():
                raise InvalidInput(f"{what}[{i}]: text is empty")
            check_utf8(text, f"{what}[{i}]")  # JSON can carry "\ud800"; the tokenizer raised TypeError on it
            if len(text) > s.max_chars_per_text:
                raise TooLarge(
                    f"{what}[{i}]: {len(text)} characters, the limit is max_chars_per_text={s.max_chars_per_text}"
                )

    def authorize(self, api_key: str | None) -> None:
        """Index-changing calls need the configured key: 401 when absent, 403 when wrong."""
        expected = self.settings.api_key
        if not expected:
            return
        if not api_key:
            raise Unauthenticated("this endpoint needs an API key (Authorization: Bearer <key> or x-api-key)")
        if not hmac.compare_digest(api_key.encode(), expected.encode()):
            raise PermissionDenied("the API key is not valid")

    async def _vectors(self, texts: list[str]) -> EmbedResult:
        """Fused vectors via the embedding cache; only misses are tokenized into the batcher."""
        repo, ensemble, batcher, _, cache = self._parts()
        t0 = time.perf_counter()
        items = await asyncio.to_thread(ensemble.tokenize, texts) if len(texts) > 16 else ensemble.tokenize(texts)
        self.metrics.stage_seconds.labels("tokenize").observe(time.perf_counter() - t0)
        tokens = sum(len(item[0]) for item in items)
        keys = [cache_key("emb", repo.fingerprint, t) for t in texts]
        out = [self._decoded(c, ensemble.dim) for c in await cache.get_many(keys)]
        missing = [i for i, v in enumerate(out) if v is None]
        self.metrics.cache.labels("embedding", "hit").inc(len(texts) - len(missing))
        self.metrics.cache.labels("embedding", "miss").inc(len(missing))
        if missing:
            t1 = time.perf_counter()
            fresh = await batcher.submit([items[i] for i in missing])
            self.metrics.stage_seconds.labels("encode").observe(time.perf_counter() - t1)
            for i, vec in zip(missing, fresh, strict=True):
                out[i] = vec
            await cache.set_many({keys[i]: encode_vector(vec) for i, vec in zip(missing, fresh, strict=True)})
        vectors = np.stack([v for v in out if v is not None]).astype(np.float32, copy=False)
        return EmbedResult(vectors=vectors, tokens=tokens)

    @staticmethod
    def _decoded(blob: bytes | None, dim: int) -> np.ndarray | None:
        """A cached vector, or None when absent or unusable (a foreign or corrupt entry is a miss)."""
        if blob is None:
            return None
        try:
            vec = decode_vector(blob)
        except ValueError:
            return None
        return vec if vec.shape == (dim,) else None

    # ------------------------------------------------------------------- public
    async def embed(self, texts: list[str], field: str = "texts") -> EmbedResult:
        """Fused, L2-normalised embeddings of texts (the same vectors the index stores).

        `field` is the request field the texts came from, so limit errors name what the client sent.
        """
        self.validate_texts(texts, field)
        return await self._vectors(texts)

    def fusion_for(self, override: FusionOverride | None) -> Fusion:
        """The fusion a search with this override runs (what responses report); bad overrides raise here."""
        repo, ensemble, _, _, _ = self._parts()
        spec = repo.ensemble.fusion
        names = [m.spec.name for m in repo.members]
        return resolve_fusion(spec.method, ensemble.weights, names, override, spec.rrf_k)

    def rescore_for(self, requested: str | None, fusion: Fusion, query_lang: str | None = None) -> str:
        """The hubness rescoring a search runs (what responses report); an impossible request raises here.

        None or "" means the server's default (`search_rescore`). The neighbourhood densities are cosines
        of the stored vectors, so rescoring needs a search scored by their inner product: the repository's
        own weights and a cosine fusion (not rrf). For any other search, and for a language-centred one
        (`query_lang`: its scores are centred cosines, not the ones the densities describe), the server default
        steps aside (and "none" is reported), while an explicit request is refused with the reason.
        """
        explicit = requested is not None and requested != ""
        method = requested if explicit else self.settings.search_rescore
        if not isinstance(method, str) or method not in RESCORE_METHODS:
            raise InvalidInput(f"rescore: {method!r} is not one of {', '.join(RESCORE_METHODS)}")
        if method != "none" and not self._parts()[3].keeps_neighbourhood:
            raise InvalidInput(
                f"rescore: {method!r} needs the neighbourhood statistics of the index, which this server does not "
                "keep; start it with --hubness-reference FILE, --neighbourhood-stats or a --search-rescore default"
            )
        if method != "none" and query_lang:
            if explicit:
                raise InvalidInput(
                    f"rescore: {method!r} does not combine with query_lang (a language-centred search): the "
                    "neighbourhood densities are plain cosines; ask for one of the two"
                )
            return "none"
        if method == "none" or self._scored_by_stored_cosine(fusion):
            return method
        if explicit:
            raise self._needs_stored_cosine(
                f"rescore: {method!r} needs cosine scores of the stored vectors (the neighbourhood densities are "
                "computed from them)",
                fusion,
                "drop the fusion override or ask for rescore 'none'",
            )
        return "none"

    def center_for(self, query_lang: str | None, fusion: Fusion) -> str:
        """The query language a search centres on ("" for none); an impossible request raises here.

        Centring (service/centering.py) subtracts language means of the stored vectors, so it needs a search
        scored by their inner product: the repository's own weights and a cosine fusion (not rrf).
        """
        if query_lang is None or query_lang == "":
            return ""
        if not isinstance(query_lang, str) or not LANG_RE.match(query_lang):
            raise InvalidInput(f"query_lang: {query_lang!r} is not a language code like 'en', 'deu' or 'zh_Hant'")
        if not self._scored_by_stored_cosine(fusion):
            raise self._needs_stored_cosine(
                "query_lang: a language-centred search needs cosine scores of the stored vectors",
                fusion,
                "drop the fusion override or the query_lang",
            )
        return query_lang

    @staticmethod
    def _needs_stored_cosine(need: str, fusion: Fusion, remedy: str) -> InvalidInput:
        """The refusal of an option that reads the stored vectors' cosines, for a search not scored by them."""
        weights = [round(w, 6) for w in fusion.weights]
        return InvalidInput(f"{need}, but this search uses fusion {fusion.method!r} with weights {weights}; {remedy}")

    def _scored_by_stored_cosine(self, fusion: Fusion) -> bool:
        _, ensemble, _, _, _ = self._parts()
        stored = normalized_weights(ensemble.weights)
        return fusion.method != "rrf" and bool(np.allclose(fusion.weights, stored, rtol=0.0, atol=1e-9))

    async def search(
        self,
        queries: list[str],
        k: int = 10,
        langs: list[str] | None = None,
        fusion: FusionOverride | None = None,
        field: str = "queries",
        rescore: str | None = None,
        query_lang: str | None = None,
    ) -> list[list[Hit]]:
        """Nearest indexed sentences for each query, optionally only in the target languages.

        `fusion` overrides the repository's fusion for this request (see service/fusion.py for what
        can be served from the stored vectors); `rescore` picks the hubness rescoring (None: the
        server's default; see `rescore_for`); `query_lang`, the language of every query, asks for a
        language-centred search (service/centering.py; see `center_for`). The result cache is keyed by
        the fusion, rescoring and centring that run. `field` names the request field in error messages,
        as for `embed`.
        """
        repo, _, _, index, cache = self._parts()
        self.validate_texts(queries, field)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be an integer from 1 to max_k={self.settings.max_k}, got {k!r}")
        used = self.fusion_for(fusion)
        centre = self.center_for(query_lang, used)
        method = self.rescore_for(rescore, used, centre)
        wanted = self._check_langs(langs, index)
        version = index.state_key
        keys = [
            cache_key(
                "res",
                repo.fingerprint,
                version,
                json.dumps([q, k, wanted, used.method, used.weights, used.rrf_k, method, centre]),
            )
            for q in queries
        ]
        cached = await cache.get_many(keys)
        results: list[list[Hit] | None] = [None if c is None else [Hit(**h) for h in json.loads(c)] for c in cached]
        missing = [i for i, r in enumerate(results) if r is None]
        self.metrics.cache.labels("result", "hit").inc(len(queries) - len(missing))
        self.metrics.cache.labels("result", "miss").inc(len(missing))
        if missing:
            emb = await self._vectors([queries[i] for i in missing])
            t0 = time.perf_counter()
            key = SearchKey(k, tuple(wanted), used, method, centre)
            found = await self._searcher_running().submit(key, emb.vectors)
            self.metrics.stage_seconds.labels("search").observe(time.perf_counter() - t0)
            for i, hits in zip(missing, found, strict=True):
                results[i] = hits
            await cache.set_many(
                {
                    keys[i]: json.dumps([asdict(h) for h in hits]).encode()
                    for i, hits in zip(missing, found, strict=True)
                }
            )
        return [r or [] for r in results]

    def _searcher_running(self) -> SearchCoalescer[SearchKey, list[Hit]]:
        if self._searcher is None:
            raise Unavailable("engine is not started")
        return self._searcher

    def _search_group(self, key: SearchKey, fused: np.ndarray) -> list[list[Hit]]:
        """One fused search for the stacked query rows of every request sharing `key` (worker thread)."""
        if key.query_lang:  # center_for let it through: the repository's own cosine fusion
            _, _, _, index, _ = self._parts()
            return index.search_centred(fused, key.k, set(key.langs) or None, key.query_lang)
        return self._search_fused(fused, key.k, set(key.langs) or None, key.fusion, key.rescore)

    def _search_fused(
        self, fused: np.ndarray, k: int, langs: set[str] | None, fusion: Fusion, method: str = "none"
    ) -> list[list[Hit]]:
        """Index search under `fusion` (worker thread): re-weighted summed cosines, or RRF re-ranking;
        then, when `method` is not "none", hubness rescoring of the cosine candidates."""
        repo, ensemble, _, index, _ = self._parts()
        stored = tuple(normalized_weights(ensemble.weights).tolist())
        queries = fused
        if stored_layout(repo.ensemble.fusion.method) == "concat" and fusion.weights != stored:
            queries = reweighted_queries(fused, ensemble.dims, stored, fusion.weights)
        if method != "none":  # rescore_for let it through: the fusion scores by stored cosine
            return self._search_rescored(index, queries, k, langs, method)
        if fusion.method != "rrf":
            return index.search(queries, k, langs)
        for _ in range(RRF_ATTEMPTS):
            candidates = index.search(queries, rrf_candidates(k), langs)
            try:
                rows = [index.vectors([h.id for h in hits]) for hits in candidates]
            except NotFound:
                continue  # a candidate was deleted between the search and the read-back
            out = []
            for query, hits, vectors in zip(fused, candidates, rows, strict=True):
                by_id = {h.id: h for h in hits}
                ranked = rrf_rerank(query, list(by_id), vectors, ensemble.dims, stored, fusion.weights, fusion.rrf_k, k)
                out.append([replace(by_id[sid], score=score) for sid, score in ranked])
            return out
        raise Unavailable("the index changed during every attempt of this rrf search; retry the request")

    @staticmethod
    def _search_rescored(
        index: SentenceIndex, queries: np.ndarray, k: int, langs: set[str] | None, method: str
    ) -> list[list[Hit]]:
        """The top max(10k, 100) cosine candidates re-ranked by `method`, best k kept (service/hubness.py).

        r_x is the mean of the query's own top-K candidate cosines; r_y the density the index stores per
        sentence, read under the same lock as the hits. Hit scores become the rescored scores.
        """
        out: list[list[Hit]] = []
        for hits, r_y in index.search_with_neighbourhood(queries, candidate_count(k), langs):
            if not hits:
                out.append([])
                continue
            cosines = np.fromiter((h.score for h in hits), dtype=np.float64, count=len(hits))
            scores = rescore(cosines, query_means(cosines, NEIGHBOURHOOD_K), r_y, method)
            best = np.argsort(-scores, kind="stable")[:k]  # stable: ties keep their cosine order
            out.append([replace(hits[i], score=float(scores[i])) for i in best.tolist()])
        return out

    @staticmethod
    def _check_langs(langs: list[str] | None, index: SentenceIndex) -> list[str]:
        if not langs:
            return []
        known = index.languages()
        unknown = sorted({lang for lang in langs if lang not in known})
        if unknown:
            listed = ", ".join(sorted(known)) or "none (the index is empty)"
            raise InvalidInput(f"unknown target language(s) {', '.join(map(repr, unknown))}; the index has: {listed}")
        return sorted(set(langs))

    async def add_sentences(self, sentences: list[Sentence]) -> list[str]:
        """Embed and index sentences; returns their ids (assigned when empty). Durable on return."""
        _, _, _, index, _ = self._parts()
        self.validate_texts([s.text for s in sentences], "sentences")
        for i, s in enumerate(sentences):
            if not isinstance(s.lang, str) or not LANG_RE.match(s.lang):
                raise InvalidInput(
                    f"sentences[{i}].lang: {s.lang!r} is not a language code like 'en', 'deu' or 'zh_Hant'"
                )
            if s.metadata is not None and not isinstance(s.metadata, dict):
                raise InvalidInput(f"sentences[{i}].metadata: must be an object")
            if not s.id:
                s.id = uuid.uuid4().hex
        emb = await self._vectors([s.text for s in sentences])
        async with self._write_lock:
            await asyncio.to_thread(index.add, sentences, emb.vectors)
        self.metrics.index_size.set(len(index))
        return [s.id for s in sentences]

    def get_sentence(self, sentence_id: str) -> Sentence:
        """One stored sentence (text, language, metadata) by id, or NotFound: what was indexed can be read back
        without searching for it."""
        _, _, _, index, _ = self._parts()
        found = index.get(sentence_id)
        if found is None:
            raise NotFound(f"unknown sentence id {sentence_id!r}")
        return found

    async def delete_sentences(self, ids: list[str]) -> int:
        """Remove sentences by id; all or nothing (unknown ids -> NotFound, nothing removed)."""
        _, _, _, index, _ = self._parts()
        if not ids:
            raise InvalidInput("ids: at least one id is required")
        if len(ids) > self.settings.max_texts_per_request:
            raise TooLarge(
                f"ids: {len(ids)} ids, the limit is max_texts_per_request={self.settings.max_texts_per_request}"
            )
        async with self._write_lock:
            removed = await asyncio.to_thread(index.delete, ids)
        self.metrics.index_size.set(len(index))
        return removed

    def info(self) -> dict[str, Any]:
        """What is being served: members, fusion, dims and the repository fingerprint."""
        repo, ensemble, _, index, cache = self._parts()
        return {
            "model": self.model_name,
            "fingerprint": repo.fingerprint,
            "dim": repo.ensemble.dim,
            "fusion": asdict(repo.ensemble.fusion),
            "members": [
                {
                    "name": m.spec.name,
                    "base_model": m.spec.base_model,
                    "tasks": m.spec.tasks,
                    "layer": m.spec.layer,
                    "dim": m.spec.dim,
                    "text_prefix": m.spec.text_prefix,
                    "runtime": {
                        **enc.describe(),
                        "batcher_concurrency": self.batching.concurrency,
                        "max_batch_size": self.batching.max_batch_size,
                        "max_batch_tokens": self.batching.max_batch_tokens,
                    },
                }
                for m, enc in zip(repo.members, ensemble.encoders, strict=True)
            ],
            "index_size": len(index),
            "languages": index.languages(),
            "cache": cache.name,
        }

    def stats(self) -> dict[str, Any]:
        """Operational figures for /stats: index, cache, uptime."""
        _, _, _, index, cache = self._parts()
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "index": index.stats(),
            "cache": cache.stats(),
        }

    async def readiness(self) -> dict[str, Any]:
        """Ready once started; a lost Redis only degrades (requests still succeed uncached)."""
        if self._cache is None or self.repo is None:
            return {"ready": False, "cache": "unknown", "status": "starting"}
        await self._cache.ping()
        cache_status = self._cache.status()
        return {
            "ready": True,
            "status": "ok" if cache_status == "ok" else "degraded",
            "cache": cache_status,
            "index_size": len(self._index) if self._index is not None else 0,
        }
