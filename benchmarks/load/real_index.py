"""Recall@10 and search time of IVF and HNSW on real sentence embeddings, against exact search.

The index-size sweep (scenario `index`) uses random unit vectors, which have no neighbourhoods, so its
recall figures (0.1-0.6) are a floor that says little about a real index. Here the index holds real
sentences: every distinct sentence of the 112 Tatoeba languages (both sides) and of the BUCC zh-en sample,
shuffled with a seed, the first `n` indexed and the next `queries` held out as queries (a user's query
is rarely in the index). Vectors come from the service's own engine (`EngineEmbedder`, cached on disk by
member sha256), the indexes from the service's `SentenceIndex` with the build parameters it serves
(IVF nlist = sqrt(n), HNSW M = 32), and the search-time knob of each kind is swept (IVF nprobe, HNSW
efSearch) by reopening the same saved index, as an operator would change `--ivf-nprobe`. Times are
in process, one query per call (what a lone `/search` pays), then 64 per call (a coalesced group).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.load.scenarios import Setup, recall_at_k
from benchmarks.load.synthetic import ivf_nlist_for
from benchmarks.retrieval.bucc import load_bucc
from benchmarks.retrieval.embed import EngineEmbedder
from benchmarks.retrieval.tatoeba import load_pair, read_languages
from service.index import IndexParams, Sentence, SentenceIndex
from service.repository import load_repository

K = 10
NPROBE = (1, 4, 16, 64)
EF_SEARCH = (16, 32, 64, 128, 256)
ADD_CHUNK = 20_000


def real_sentences(data_dir: Path) -> list[tuple[str, str]]:
    """(lang, text) of every distinct sentence of Tatoeba (112 languages, both sides) and BUCC zh-en sample."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []

    def take(lang: str, texts: list[str]) -> None:
        for text in texts:
            if text not in seen:
                seen.add(text)
                out.append((lang, text))

    for language in read_languages(data_dir):
        pair = load_pair(data_dir, language)
        take(language.iso3, pair.xx)
        take("eng", pair.en)
    bucc = load_bucc(data_dir, "zh-en")
    take("cmn", bucc.src.unique_texts)
    take("eng", bucc.tgt.unique_texts)
    return out


def split_corpus(
    sentences: list[tuple[str, str]], n: int, queries: int, seed: int = 0
) -> tuple[list[tuple[str, str]], list[str]]:
    """Seeded shuffle; the first `n` are indexed, the next `queries` are held out as queries."""
    if n + queries > len(sentences):
        raise ValueError(f"asked for {n} indexed + {queries} query sentences, the corpus has {len(sentences)}")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    indexed = [sentences[i] for i in order[:n]]
    held_out = [sentences[i][1] for i in order[n : n + queries]]
    return indexed, held_out


def open_index(directory: Path, repo: Path, params: IndexParams) -> SentenceIndex:
    """The service's index at `directory` for `repo`'s fingerprint and dim, built or searched with `params`."""
    repository = load_repository(repo)
    return SentenceIndex.open(directory, dim=repository.ensemble.dim, fingerprint=repository.fingerprint, params=params)


def _build(
    directory: Path, repo: Path, params: IndexParams, indexed: list[tuple[str, str]], vectors: np.ndarray
) -> float:
    if directory.exists():
        shutil.rmtree(directory)
    index = open_index(directory, repo, params)
    started = time.perf_counter()
    try:
        for start in range(0, len(indexed), ADD_CHUNK):
            chunk = indexed[start : start + ADD_CHUNK]
            sentences = [Sentence(id=f"r{start + i}", text=t, lang=lang) for i, (lang, t) in enumerate(chunk)]
            index.add(sentences, vectors[start : start + len(chunk)])
        index.save()
    finally:
        index.close()
    return time.perf_counter() - started


def _search(directory: Path, repo: Path, params: IndexParams, queries: np.ndarray) -> dict[str, Any]:
    """Top-K ids per query, ms per single-query call, and queries/s at 64 per call."""
    index = open_index(directory, repo, params)
    try:
        ids: list[list[str]] = []
        started = time.perf_counter()
        for row in queries:
            ids.append([hit.id for hit in index.search(row[None, :], K)[0]])
        single_ms = (time.perf_counter() - started) * 1000 / len(queries)
        started = time.perf_counter()
        for start in range(0, len(queries), 64):
            index.search(queries[start : start + 64], K)
        grouped_qps = len(queries) / (time.perf_counter() - started)
    finally:
        index.close()
    return {"ids": ids, "ms_per_query": round(single_ms, 3), "qps_64_per_call": round(grouped_qps, 1)}


def scenario_recall(
    setup: Setup, n: int = 100_000, queries: int = 1000, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Flat, IVF (nprobe sweep) and HNSW (efSearch sweep) over `n` real sentence vectors."""
    data_dir = setup.tatoeba.parent.parent  # .../data/tatoeba/v1 -> .../data
    indexed, held_out = split_corpus(real_sentences(data_dir), n, queries)
    texts = [t for _, t in indexed]

    async def embed() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        async with EngineEmbedder(setup.repo, cache_dir) as embedder:
            started = time.perf_counter()
            corpus = await embedder.embed(texts, desc=f"embed {n} sentences")
            query_vectors = await embedder.embed(held_out, desc="embed queries")
            info = {
                "seconds": round(time.perf_counter() - started, 1),
                "from_cache": embedder.texts_from_cache,
                "embedded": embedder.texts_embedded,
            }
            return corpus, query_vectors, info

    vectors, query_vectors, embedding = asyncio.run(embed())
    nlist = ivf_nlist_for(n)
    kinds = {
        "flat": [IndexParams(kind="flat")],
        "ivf": [IndexParams(kind="ivf", ivf_nlist=nlist, ivf_nprobe=p) for p in NPROBE],
        "hnsw": [IndexParams(kind="hnsw", hnsw_ef_search=e) for e in EF_SEARCH],
    }
    exact: list[list[str]] = []
    points: list[dict[str, Any]] = []
    builds: dict[str, float] = {}
    for kind, sweep in kinds.items():
        directory = setup.work / "index" / f"real-{n}-{kind}"
        print(f"  building {kind} index of {n} real sentences", file=sys.stderr, flush=True)
        builds[kind] = round(_build(directory, setup.repo, sweep[0], indexed, vectors), 2)
        for params in tqdm(sweep, desc=f"search {kind}", leave=False):
            found = _search(directory, setup.repo, params, query_vectors)
            if kind == "flat":
                exact = found["ids"]
            knob = {"ivf": {"nprobe": params.ivf_nprobe}, "hnsw": {"ef_search": params.hnsw_ef_search}}.get(kind, {})
            points.append(
                {
                    "kind": kind,
                    **knob,
                    "recall_at_10": recall_at_k(found["ids"], exact, K),
                    "ms_per_query": found["ms_per_query"],
                    "qps_64_per_call": found["qps_64_per_call"],
                }
            )
    return {
        "n": n,
        "queries": queries,
        "corpus": "distinct sentences of Tatoeba (112 languages, both sides) and BUCC zh-en sample, seeded shuffle",
        "embedding": embedding,
        "params": {"ivf_nlist": nlist, "hnsw_m": IndexParams().hnsw_m},
        "build_s": builds,
        "points": points,
    }
