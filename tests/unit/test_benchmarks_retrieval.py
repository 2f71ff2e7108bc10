"""Retrieval benchmarks: metrics on hand-made cases, loaders on the real data, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import main
from benchmarks.retrieval import bucc, tatoeba
from benchmarks.retrieval.errors import BenchmarkError
from benchmarks.retrieval.metrics import (
    assign_folds,
    cross_validated_f1,
    f1_at_threshold,
    oracle_threshold,
    precision_at_1,
    ratio_margin,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "tatoeba").is_dir(), reason="shared data not present")


def at(*degrees: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles: cosines are then easy to do by hand."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------ metrics
def test_p_at_1_differs_by_direction_with_a_hub() -> None:
    # xx at 0, 90 and 45 degrees (45 is a hub); English at 45.5, 30, 60 degrees, i.e. stored in an
    # order where xx[0] <-> en[1], xx[1] <-> en[2], xx[2] <-> en[0].
    xx, en, gold = at(0, 90, 45), at(45.5, 30, 60), np.array([1, 2, 0])
    xx_en, en_xx = tatoeba.evaluate(xx, en, gold)
    # xx->en: 0 -> 30 (30 deg away, vs 45.5), 90 -> 60, 45 -> 45.5: all right.
    assert xx_en.tolist() == [True, True, True]
    # en->xx: 45.5 -> 45 right; 30 and 60 are both nearer the hub (15 deg) than to 0 / 90 (30 deg).
    assert en_xx.tolist() == [True, False, False]
    assert precision_at_1(np.array([2, 0, 0]), np.array([2, 1, 0])) == pytest.approx(2 / 3)


def test_ratio_margin_scalar() -> None:
    assert ratio_margin(np.array(0.9), np.array(0.8), np.array(0.6)) == pytest.approx(0.9 / 0.7)


def test_mining_margin_scores_match_a_hand_computation() -> None:
    x, y = at(0, 90), at(10, 50, 100)
    c = lambda d: math.cos(math.radians(d))  # noqa: E731
    # densities with k=2: x0 -> {y0 10deg, y1 50deg}, x1 -> {y2 10deg, y1 40deg};
    # y0 -> {x0 10, x1 80}, y2 -> {x1 10, x0 100 (negative cosine)}
    d_x0, d_x1 = (c(10) + c(50)) / 2, (c(10) + c(40)) / 2
    d_y0, d_y2 = (c(10) + c(80)) / 2, (c(10) + c(100)) / 2
    mined = bucc.mine(x, y, "ratio_margin", k=2)
    pairs = {(int(s), int(t)): float(v) for s, t, v in zip(mined.src, mined.tgt, mined.score, strict=True)}
    # x1 <-> y1 would score c(40)/((d_x1+d_y1)/2) < 1 and x1 is already taken: one-to-one keeps two pairs
    assert set(pairs) == {(0, 0), (1, 2)}
    assert pairs[(0, 0)] == pytest.approx(c(10) / ((d_x0 + d_y0) / 2), rel=1e-5)
    assert pairs[(1, 2)] == pytest.approx(c(10) / ((d_x1 + d_y2) / 2), rel=1e-5)
    cosine = bucc.mine(x, y, "cosine", k=2)
    assert sorted(zip(cosine.src.tolist(), cosine.tgt.tolist(), strict=True)) == [(0, 0), (1, 2)]
    assert cosine.score == pytest.approx([c(10), c(10)], rel=1e-5)


def test_f1_at_threshold_and_oracle() -> None:
    scores, correct = np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False])
    at_065 = f1_at_threshold(scores, correct, n_gold=3, threshold=0.65)
    assert (at_065.n_extracted, at_065.n_correct) == (3, 2)
    assert at_065.precision == pytest.approx(2 / 3) and at_065.f1 == pytest.approx(2 / 3)
    at_085 = f1_at_threshold(scores, correct, n_gold=3, threshold=0.85)
    assert at_085.precision == 1.0 and at_085.recall == pytest.approx(1 / 3) and at_085.f1 == pytest.approx(0.5)
    best = oracle_threshold(scores, correct, n_gold=3)
    assert best.threshold == pytest.approx(0.65) and best.f1 == pytest.approx(2 / 3)
    tied = oracle_threshold(np.array([0.9, 0.9, 0.5]), np.array([False, True, False]), n_gold=1)
    assert tied.threshold == pytest.approx(0.7) and tied.f1 == pytest.approx(2 / 3)
    assert f1_at_threshold(np.array([0.9, 0.9, 0.5]), np.array([False, True, False]), 1, tied.threshold).f1 == (
        pytest.approx(tied.f1)
    )


def test_cross_validation_finds_the_gap_of_a_separable_case() -> None:
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.uniform(0.7, 0.9, 30), rng.uniform(0.1, 0.4, 30)])
    correct = np.arange(60) < 30
    folds = assign_folds(60, 5, seed=3)
    cv = cross_validated_f1(scores, correct, folds, folds[:30], n_folds=5)
    assert all(0.4 < t < 0.7 for t in cv.fold_thresholds)
    assert cv.pooled.f1 == 1.0 and cv.pooled.n_extracted == 30
    assert sorted(np.bincount(folds).tolist()) == [12] * 5


# ------------------------------------------------------------------------------------------ loaders
@needs_data
def test_tatoeba_languages_and_line_counts() -> None:
    languages = tatoeba.read_languages(DATA)
    assert len(languages) == 112
    assert len(tatoeba.select_languages(languages, "xtreme36")) == 36
    assert len(tatoeba.select_languages(languages, "xtreme_r41")) == 41
    chosen = tatoeba.select_languages(languages, "xtreme36", ["de", "jav"])
    assert [lang.iso3 for lang in chosen] == ["deu", "jav"]
    deu, jav = (tatoeba.load_pair(DATA, lang) for lang in chosen)
    assert (len(deu.xx), len(deu.en), len(jav.xx)) == (1000, 1000, 205)
    assert deu.en == sorted(deu.en)  # XTREME sorts the English side
    original = (DATA / "tatoeba" / "v1" / "tatoeba.deu-eng.eng").read_text(encoding="utf-8").split("\n")
    assert all(deu.en[deu.gold[i]] == original[i].strip() for i in range(1000))
    assert len(tatoeba.load_pair(DATA, chosen[0], max_sentences=7).xx) == 7
    with pytest.raises(BenchmarkError, match="not in the language set xtreme36"):
        tatoeba.select_languages(languages, "xtreme36", ["ang"])


@needs_data
def test_bucc_zh_en_sample_counts() -> None:
    corpus = bucc.load_bucc(DATA)
    assert (len(corpus.src.ids), len(corpus.tgt.ids), len(corpus.gold)) == (8624, 13589, 257)
    capped = bucc.cap_corpus(corpus, 40)
    assert len(capped.src.ids) == len(capped.tgt.ids) == 40 and len(capped.gold) == 20


def _copy_head(src: Path, dst: Path, n: int, replace: dict[int, str] | None = None) -> None:
    lines = src.read_text(encoding="utf-8").split("\n")[:n]
    for number, text in (replace or {}).items():
        lines[number - 1] = text
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")


@needs_data
def test_malformed_lines_are_named(tmp_path: Path) -> None:
    real = DATA / "bucc2018"
    _copy_head(real / "zh-en.dev.zh", tmp_path / "bucc2018" / "zh-en.dev.zh", 5, {3: "zh-000000003 no tab here"})
    _copy_head(real / "zh-en.dev.en", tmp_path / "bucc2018" / "zh-en.dev.en", 5)
    (tmp_path / "bucc2018" / "zh-en.dev.gold").write_text("", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"zh-en\.dev\.zh:3: expected 'zh-<9 digits><TAB>sentence'"):
        bucc.load_bucc(tmp_path)

    tsv = DATA / "tatoeba" / "languages.tsv"
    _copy_head(tsv, tmp_path / "tatoeba" / "languages.tsv", 4, {3: "ang\t\tyes\t0\t134"})
    with pytest.raises(BenchmarkError, match=r"languages\.tsv:3:"):
        tatoeba.read_languages(tmp_path)
    _copy_head(tsv, tmp_path / "tatoeba" / "languages.tsv", 2)  # header + afr (1000 pairs)
    v1 = DATA / "tatoeba" / "v1"
    _copy_head(v1 / "tatoeba.afr-eng.afr", tmp_path / "tatoeba" / "v1" / "tatoeba.afr-eng.afr", 1000, {10: " "})
    _copy_head(v1 / "tatoeba.afr-eng.eng", tmp_path / "tatoeba" / "v1" / "tatoeba.afr-eng.eng", 999)
    (afr,) = tatoeba.read_languages(tmp_path)
    with pytest.raises(BenchmarkError, match=r"afr-eng\.afr:10: empty sentence"):
        tatoeba.load_pair(tmp_path, afr)
    _copy_head(v1 / "tatoeba.afr-eng.afr", tmp_path / "tatoeba" / "v1" / "tatoeba.afr-eng.afr", 1000)
    with pytest.raises(BenchmarkError, match=r"afr-eng\.eng: 999 lines, languages\.tsv says 1000"):
        tatoeba.load_pair(tmp_path, afr)


def test_family_gains_average_their_languages_and_name_the_families_that_lose() -> None:
    from benchmarks.retrieval.families import FAMILIES, family_of, group_by_family
    from benchmarks.retrieval.runner import _averages, _family_means, _gains

    assert family_of("tha") == "Tai-Kadai" and family_of("xho") == "unclassified"
    assert all(family_of(c) != "unclassified" for c in ["afr", "aze", "lit", "pol", "ron", "ukr", "swh", "eus"])
    assert sum(len(v) for v in FAMILIES.values()) == 41  # every XTREME-R language, each once
    assert group_by_family(["tha", "deu", "xho", "nld"]) == {"Germanic": [1, 3], "Tai-Kadai": [0], "unclassified": [2]}

    codes = ["deu", "nld", "tha"]
    ones = np.ones(100)
    base_hits = {"xx_en": [np.r_[ones[:80], np.zeros(20)], ones.copy(), ones.copy()], "en_xx": [ones] * 3}
    # the other system: deu +10 points, nld unchanged, tha -20 points (xx->en only)
    other_hits = {"xx_en": [np.r_[ones[:90], np.zeros(10)], ones.copy(), np.r_[ones[:80], np.zeros(20)]]}
    other_hits["en_xx"] = [ones] * 3
    results, replicates = {}, {}
    for name, hits in (("base", base_hits), ("other", other_hits)):
        average, reps = _averages(hits, seed=0)
        results[name] = {
            "average": {k: v for k, v in average.items()},
            "per_language": {c: {d: 100 * hits[d][i].mean() for d in hits} for i, c in enumerate(codes)},
            "families": _family_means(hits, codes, 0, reps),
        }
        replicates[name] = reps
    assert results["base"]["families"]["Germanic"] == {"languages": ["deu", "nld"], "xx_en": 90.0, "en_xx": 100.0}
    gain = _gains(results, replicates, "base")["other"]
    assert gain["families"]["Germanic"]["xx_en"] == 5.0  # mean of +10 and 0
    assert gain["families"]["Tai-Kadai"]["xx_en"] == -20.0
    assert gain["families_losing"] == {"xx_en": ["Tai-Kadai"], "en_xx": []}
    assert gain["families_losing_ci"]["xx_en"] == ["Tai-Kadai"]  # 20 of 100 lost: the interval excludes zero
    lo, hi = gain["families"]["Germanic"]["xx_en_ci95"]
    assert 0 < lo < 5 < hi  # paired: only deu's 10 changed sentences vary


# ------------------------------------------------------------------------------------------ end to end
@needs_data
def test_cli_end_to_end_on_the_tiny_repository(
    tiny_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["retrieval", "--system", f"tiny={tiny_repo}", "--system", f"same={tiny_repo}", "--languages", "de,fr"]
    argv += ["--max-sentences", "24", "--out", str(out), "--cache-dir", str(cache), "--name", "smoke"]
    argv += ["--data-dir", str(DATA)]
    assert main(argv) == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"smoke.json", "smoke.md", "smoke-averages.png", "smoke-gains.png", "smoke-gain-bars.png"}
    assert (out / "smoke-gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "smoke.json").read_text(encoding="utf-8"))
    assert {"config", "systems", "tatoeba", "bucc", "baseline", "wall_s", "files"} <= set(results)
    tat = results["tatoeba"]
    assert [lang["iso3"] for lang in tat["languages"]] == ["deu", "fra"]
    assert set(tat["results"]["tiny"]["per_language"]["deu"]) == {"code", "n", "xx_en", "en_xx"}
    assert set(tat["results"]["tiny"]["average"]) == {"xx_en", "en_xx", "xx_en_ci95", "en_xx_ci95"}
    # the same repository under two names: identical vectors, so every gain is exactly zero
    assert tat["gains"]["same"]["xx_en"] == 0 and tat["gains"]["same"]["xx_en_ci95"] == [0, 0]
    assert list(tat["results"]["tiny"]["families"]) == ["Germanic", "Romance"]
    assert tat["gains"]["same"]["families_losing"] == {"xx_en": [], "en_xx": []}
    assert "per language family" in (out / "smoke.md").read_text(encoding="utf-8")
    b = results["bucc"]
    assert "SAMPLE" in b["split"] and (b["n_src"], b["n_tgt"], b["n_gold"]) == (24, 24, 12)
    assert set(b["results"]["tiny"]) == {"ratio_margin", "cosine"}
    assert {"cv", "oracle"} <= set(b["results"]["tiny"]["ratio_margin"])
    assert "ORACLE" in (out / "smoke.md").read_text(encoding="utf-8")
    # the cache is keyed by repository fingerprint, so the second name reuses the first one's vectors
    tiny, same = results["systems"]["tiny"], results["systems"]["same"]
    assert tiny["texts_from_cache"] == 0 and tiny["texts_embedded"] >= 4 * 24
    assert same["texts_embedded"] == 0 and same["texts_from_cache"] == tiny["texts_embedded"]

    # a re-run reads every vector from the cache and reproduces the numbers
    assert main(argv) == 0
    again = json.loads((out / "smoke.json").read_text(encoding="utf-8"))
    assert again["systems"]["tiny"]["texts_embedded"] == 0
    assert again["tatoeba"]["results"] == tat["results"] and again["bucc"]["results"] == b["results"]

    assert main(["retrieval", "--system", "no equals sign"]) == 2
    assert "expected NAME=REPO_DIR" in capsys.readouterr().err


@needs_data
def test_a_centred_system_scores_each_side_on_its_own_mean(tiny_repo: Path, tmp_path: Path) -> None:
    """`~center` end to end: the reported P@1 is the one computed by hand from centred sides of the real file."""
    import asyncio

    from benchmarks.retrieval.systems import System, SystemEmbedder
    from service.centering import center_by_own_mean

    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["retrieval", "--system", f"tiny={tiny_repo}", "--system", f"tiny.c={tiny_repo}~center"]
    argv += ["--languages", "de", "--max-sentences", "60", "--tasks", "tatoeba", "--data-dir", str(DATA)]
    assert main([*argv, "--out", str(out), "--cache-dir", str(cache), "--name", "c"]) == 0
    results = json.loads((out / "c.json").read_text(encoding="utf-8"))
    assert results["systems"]["tiny"]["center"] is None and results["systems"]["tiny.c"]["center"] == "language"
    assert results["systems"]["tiny.c"]["texts_embedded"] == 0  # the same member vectors, centred afterwards
    (deu,) = [lang for lang in tatoeba.read_languages(DATA) if lang.iso3 == "deu"]
    pair = tatoeba.load_pair(DATA, deu, max_sentences=60)

    async def sides() -> tuple[np.ndarray, np.ndarray]:
        async with SystemEmbedder(System("tiny", tiny_repo), cache) as embedder:
            return await embedder.embed(pair.xx), await embedder.embed(pair.en)

    xx, en = asyncio.run(sides())
    xx_en, en_xx = tatoeba.evaluate(center_by_own_mean(xx), center_by_own_mean(en), pair.gold)
    got = results["tatoeba"]["results"]["tiny.c"]["per_language"]["deu"]
    assert (got["xx_en"], got["en_xx"]) == (round(100 * xx_en.mean(), 2), round(100 * en_xx.mean(), 2))
