"""Recall on real sentence vectors: the corpus split, the scenario end to end on the tiny model, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.load.plot import plot_recall
from benchmarks.load.real_index import real_sentences, scenario_recall, split_corpus
from benchmarks.load.scenarios import Setup

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_split_is_seeded_disjoint_and_refuses_too_much() -> None:
    sentences = [("eng", f"sentence {i}") for i in range(50)]
    indexed, queries = split_corpus(sentences, 30, 10, seed=3)
    assert (indexed, queries) == split_corpus(sentences, 30, 10, seed=3)
    assert len(indexed) == 30 and len(queries) == 10
    assert not {t for _, t in indexed} & set(queries)
    assert split_corpus(sentences, 30, 10, seed=4) != (indexed, queries)
    with pytest.raises(ValueError, match="corpus has 50"):
        split_corpus(sentences, 45, 10)


@pytest.mark.skipif(not (DATA / "tatoeba").is_dir(), reason="needs ../shared/data")
def test_real_corpus_holds_distinct_sentences_of_many_languages() -> None:
    sentences = real_sentences(DATA)
    texts = [t for _, t in sentences]
    assert len(texts) == len(set(texts)) > 100_000  # enough for the 100k index the scenario builds
    languages = {lang for lang, _ in sentences}
    assert {"eng", "cmn", "deu", "swh"} <= languages and len(languages) >= 100


@pytest.mark.skipif(not (DATA / "tatoeba").is_dir(), reason="needs ../shared/data")
def test_scenario_measures_recall_against_flat_on_the_tiny_model(tiny_repo: Path, tmp_path: Path) -> None:
    setup = Setup(repo=tiny_repo, work=tmp_path / "work", tatoeba=DATA / "tatoeba" / "v1")
    result = scenario_recall(setup, n=400, queries=25, cache_dir=tmp_path / "cache")
    points = {(p["kind"], p.get("nprobe"), p.get("ef_search")): p for p in result["points"]}
    assert points[("flat", None, None)]["recall_at_10"] == 1.0  # flat is the reference
    assert result["params"]["ivf_nlist"] == 10
    # probing every IVF cluster is exact search again; more probes never find fewer true neighbours
    ivf = [p for p in result["points"] if p["kind"] == "ivf"]
    assert [p["nprobe"] for p in ivf] == [1, 4, 16, 64]
    assert ivf[-1]["recall_at_10"] == 1.0
    assert [p["recall_at_10"] for p in ivf] == sorted(p["recall_at_10"] for p in ivf)
    assert all(0.0 <= p["recall_at_10"] <= 1.0 and p["ms_per_query"] > 0 for p in result["points"])
    again = scenario_recall(setup, n=400, queries=25, cache_dir=tmp_path / "cache")
    assert again["embedding"]["from_cache"] == 425 and again["embedding"]["embedded"] == 0
    record = tmp_path / "recall.json"
    record.write_text(json.dumps(result), encoding="utf-8")
    png = plot_recall(record, tmp_path / "recall.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
