"""Retrieval benchmark: hubness-rescored P@1 on hand-made vectors, the stsb-dev loader on the real data,
and the CLI end to end with `--tasks tatoeba stsb-dev --rescore margin,csls` on the tiny repository."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import build_parser, main
from benchmarks.retrieval import stsb_dev, tatoeba
from benchmarks.retrieval.errors import BenchmarkError
from benchmarks.retrieval.rescoring import hits_paper, hits_reference, hits_service
from export.tasks.metrics import p_at_1

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "stsb_multi_mt").is_dir(), reason="shared data not present")


def hub_world() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries Q1-Q3, targets [H, C1-C4, T1-T3] (gold of Qj is Tj), on an orthonormal basis e0..e10.

    H = e0 with a crowd Ci = 0.95 e0 + sqrt(1 - 0.95^2) e_i around it; Qj = 0.8 e0 + 0.6 e_{4+j};
    Tj = 0.3 e0 + 0.85 e_{4+j} + sqrt(0.1875) e_{7+j}. Cosines: Q-H 0.8 > Q-C 0.76 > Q-T 0.75, so plain
    cosine answers the hub for every query. Paper r (k=4, other side; 3 queries so 3 of them): r_H = 0.8,
    r_C = 0.76, r_Tj = (0.75 + 2 * 0.24) / 3; r_Qj = (0.8 + 3 * 0.76) / 4. Margin then gives
    Tj 0.75 / ((0.77 + 0.41) / 2) = 1.27 against H 0.8 / ((0.77 + 0.8) / 2) = 1.02.
    """
    e = np.eye(11)
    crowd = [0.95 * e[0] + math.sqrt(1 - 0.95**2) * e[i] for i in range(1, 5)]
    queries = np.stack([0.8 * e[0] + 0.6 * e[4 + j] for j in range(1, 4)])
    translations = [0.3 * e[0] + 0.85 * e[4 + j] + math.sqrt(0.1875) * e[7 + j] for j in range(1, 4)]
    targets = np.stack([e[0], *crowd, *translations])
    return queries.astype(np.float32), targets.astype(np.float32), np.array([5, 6, 7])


def test_rescoring_turns_hub_misses_into_hits_in_both_versions() -> None:
    queries, targets, gold = hub_world()
    for hits in (hits_paper, hits_service):
        assert hits(queries, targets, gold, "none", 4).tolist() == [False] * 3
        assert hits(queries, targets, gold, "margin", 4).tolist() == [True] * 3
        assert hits(queries, targets, gold, "csls", 4).tolist() == [True] * 3
    # the other direction: each translation's nearest query is its own (0.75 vs 0.24), with or without rescoring
    assert hits_paper(targets[gold], queries, np.array([0, 1, 2]), "margin", 4).tolist() == [True] * 3


def test_a_reference_of_other_queries_finds_the_hub_that_the_targets_alone_cannot() -> None:
    """r_y over a reference sample: four sentences in "another language" (0.8 e0 + 0.6 e10, never a query here)
    crowd the hub H (r 0.8) and its crowd (0.76) but not the translations (0.24), so margin and CSLS answer Tj;
    a reference that crowds no target (all on the far side of e0) leaves plain cosine's misses as they were."""
    queries, targets, gold = hub_world()
    e = np.eye(11)
    reference = np.stack([0.8 * e[0] + 0.6 * e[10]] * 4).astype(np.float32)
    for method in ("margin", "csls"):
        assert hits_reference(queries, targets, gold, method, 4, reference=reference).tolist() == [True] * 3
    assert hits_reference(queries, targets, gold, "none", 4, reference=reference).tolist() == [False] * 3
    far = np.stack([-e[0]] * 4).astype(np.float32)  # r_y: H -1, C -0.95, Tj -0.3: CSLS favours the hub still more
    assert hits_reference(queries, targets, gold, "csls", 4, reference=far).tolist() == [False] * 3
    with pytest.raises(ValueError, match="does not fit"):
        hits_reference(queries, targets, gold, "margin", 4, reference=np.zeros((2, 5), np.float32))


def test_plain_scores_agree_with_the_other_p_at_1_definitions() -> None:
    rng = np.random.default_rng(5)
    xx = rng.standard_normal((120, 8)).astype(np.float32)
    en = (xx + 1.2 * rng.standard_normal((120, 8))).astype(np.float32)  # noisy translations: some misses
    xx /= np.linalg.norm(xx, axis=1, keepdims=True)
    en /= np.linalg.norm(en, axis=1, keepdims=True)
    gold = np.arange(120)
    strict = hits_paper(xx, en, gold, "none", 4, strict=True)
    assert 0.2 < strict.mean() < 0.9
    assert strict.mean() == pytest.approx(p_at_1(xx, en))  # the dev metric training and fusion selection use
    xx_en, _ = tatoeba.evaluate(xx, en, gold)
    assert hits_paper(xx, en, gold, "none", 4).tolist() == xx_en.tolist()  # FAISS top-1, as Tatoeba scores
    assert hits_service(xx, en, gold, "none", 4).tolist() == xx_en.tolist()


def test_strict_p_at_1_refuses_ties() -> None:
    src, tgt, gold = np.array([[1.0, 0.0]], np.float32), np.array([[1.0, 0.0], [1.0, 0.0]], np.float32), np.array([0])
    assert hits_paper(src, tgt, gold, "none", 4).tolist() == [True]  # first best, as a FAISS top-1 returns
    for hits in (hits_paper, hits_service):  # (the service keeps FAISS' candidate order, which varies with k)
        assert hits(src, tgt, gold, "none", 4, strict=True).tolist() == [False]
    with pytest.raises(ValueError, match="'cosine' is not one of none, margin, csls"):
        hits_paper(src, tgt, gold, "cosine", 4)


# ------------------------------------------------------------------------------------------ stsb-dev loader
@needs_data
def test_stsb_dev_loader_on_the_real_files() -> None:
    pairs = stsb_dev.load_dev(DATA, ["de", "ja"])
    assert [(p.lang, len(p.xx), len(p.en)) for p in pairs] == [("de", 2886, 2886), ("ja", 2885, 2885)]
    assert pairs[0].xx[0] == "Ein Mann mit einem Schutzhelm tanzt."
    assert pairs[0].en[0] == "A man with a hard hat is dancing."
    assert len(set(pairs[0].en)) == len(pairs[0].en)  # one-to-one: a single gold per query
    capped = stsb_dev.load_dev(DATA, ["fr"], max_sentences=7)
    assert (len(capped[0].xx), len(capped[0].en)) == (7, 7)
    assert [p.lang for p in stsb_dev.load_dev(DATA)] == list(stsb_dev.LANGUAGES)
    with pytest.raises(BenchmarkError, match=r"stsb-dev: no retrieval dev data for \['ko'\]"):
        stsb_dev.load_dev(DATA, ["ko"])
    with pytest.raises(BenchmarkError, match="missing data file"):
        stsb_dev.load_dev(DATA / "nowhere", ["de"])


@needs_data
def test_stsb_dev_loader_and_benchmark_runner_do_not_import_torch() -> None:
    code = (
        "import sys; from pathlib import Path; import benchmarks.retrieval.runner; "
        "from benchmarks.retrieval import stsb_dev; "
        f"stsb_dev.load_dev(Path({str(DATA)!r}), ['de'], 5); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------------ end to end
def test_stsb_dev_is_a_task_choice_but_not_a_default() -> None:
    args = build_parser().parse_args(["retrieval", "--system", "a=repo"])
    assert args.tasks == ["tatoeba", "bucc"] and args.rescore == "none"
    args = build_parser().parse_args(["retrieval", "--system", "a=repo", "--tasks", "stsb-dev"])
    assert args.tasks == ["stsb-dev"]


@needs_data
def test_cli_scores_rescoring_from_the_same_vectors(
    tiny_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["retrieval", "--system", f"tiny={tiny_repo}", "--languages", "de,fr", "--max-sentences", "24"]
    argv += ["--tasks", "tatoeba", "stsb-dev", "--rescore", "margin,csls", "--out", str(out)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--name", "rescore", "--data-dir", str(DATA)]
    assert main(argv) == 0
    results = json.loads((out / "rescore.json").read_text(encoding="utf-8"))
    assert results["config"]["rescore"] == ["margin", "csls"] and results["config"]["tasks"] == ["tatoeba", "stsb-dev"]
    assert "bucc" not in results

    tiny = results["tatoeba"]["results"]["tiny"]
    for key in ("rescored", "rescored_service"):
        assert set(tiny[key]) == {"margin", "csls"}
        margin = tiny[key]["margin"]
        assert set(margin["per_language"]) == {"deu", "fra"}
        assert set(margin["per_language"]["deu"]) == {"xx_en", "en_xx"}
        assert 0 <= margin["average"]["xx_en"] <= 100 and len(margin["average"]["xx_en_ci95"]) == 2
        gain = margin["gain_over_cosine"]
        assert gain["xx_en"] == pytest.approx(margin["average"]["xx_en"] - tiny["average"]["xx_en"], abs=0.011)
        lo, hi = gain["xx_en_ci95"]
        assert lo <= hi

    dev = results["stsb_dev"]
    assert [lang["code"] for lang in dev["languages"]] == ["de", "fr"]
    assert [lang["n_used"] for lang in dev["languages"]] == [24, 24]
    dev_tiny = dev["results"]["tiny"]
    assert set(dev_tiny["per_language"]) == {"de", "fr"} and set(dev_tiny["average"]) == {"xx_en", "xx_en_ci95"}
    assert set(dev_tiny["rescored"]["csls"]["per_language"]["fr"]) == {"xx_en"}

    # no embedding pass for rescoring: exactly the Tatoeba sides, the English dev union and the foreign dev sides,
    # once per member (systems embed member by member)
    english = {t for p in stsb_dev.load_dev(DATA, ["de", "fr"], 24) for t in p.en}
    members = len(results["systems"]["tiny"]["members"])
    assert results["systems"]["tiny"]["texts_embedded"] == members * (2 * 2 * 24 + len(english) + 2 * 24)

    report = (out / "rescore.md").read_text(encoding="utf-8")
    assert "## Hubness rescoring" in report and "stsb-dev DEV xx->en" in report
    assert "## stsb_multi_mt dev retrieval (DEV set)" in report and "margin (service)" in report

    reference = tmp_path / "reference.txt"
    reference.write_text("Das ist ein Satz.\nC'est une phrase.\nEsto es una frase.\nTo jest zdanie.\nこれは文です。\n")
    with_ref = [*argv[:-4], "--name", "ref", "--data-dir", str(DATA), "--rescore-reference", str(reference)]
    assert main(with_ref) == 0
    ref_results = json.loads((out / "ref.json").read_text(encoding="utf-8"))
    facts = ref_results["config"]["rescore_reference"]
    assert facts["sentences"] == 5 and len(facts["sha256"]) == 64
    ref_tatoeba, ref_dev = ref_results["tatoeba"]["results"]["tiny"], ref_results["stsb_dev"]["results"]["tiny"]
    assert set(ref_tatoeba["rescored_reference"]) == set(ref_dev["rescored_reference"]) == {"margin", "csls"}
    # the same vectors: adding a reference changes no other number
    assert ref_tatoeba["rescored_service"] == tiny["rescored_service"]
    assert ref_dev["rescored_service"] == dev_tiny["rescored_service"]
    assert ref_results["systems"]["tiny"]["texts_embedded"] == members * 5  # only the reference was new
    assert "margin (reference)" in (out / "ref.md").read_text(encoding="utf-8")
    assert (out / "ref-rescoring.png").stat().st_size > 0 and (out / "rescore-rescoring.png").stat().st_size > 0
    assert main([*argv[:-4], "--rescore", "none", "--rescore-reference", str(reference)]) == 2
    assert "--rescore-reference is used by rescoring only" in capsys.readouterr().err
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    blank_argv = [*argv[:-4], "--name", "blank", "--data-dir", str(DATA), "--rescore-reference", str(blank)]
    assert main(blank_argv) == 2  # the service's own refusal, as bad input
    assert f"hubness reference {blank}: no sentences" in capsys.readouterr().err

    assert main([*argv, "--rescore", "margin,cosine"]) == 2
    assert "--rescore 'margin,cosine': expected a comma-separated list of none, margin, csls" in capsys.readouterr().err
