"""`python -m export reference`: the hubness reference sample drawn from the stsb_multi_mt train split."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.retrieval.textfile import read_lines
from export.__main__ import main
from export.reference import sample_reference, write_reference
from export.tasks.pairs import read_stsb_csv, stsb_path
from export.tasks.retrieval_dev import RETRIEVAL_LANGS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "stsb_multi_mt").is_dir(), reason="shared data not present")


@needs_data
def test_sample_is_per_language_train_only_and_fixed_by_its_seed() -> None:
    sample = sample_reference(DATA, per_language=20, seed=0)
    assert len(sample) == 20 * len(RETRIEVAL_LANGS) and len(set(sample)) == len(sample)
    assert sample == sample_reference(DATA, per_language=20, seed=0)
    assert sample != sample_reference(DATA, per_language=20, seed=1)
    for i, lang in enumerate(RETRIEVAL_LANGS):  # in RETRIEVAL_LANGS order, each block from its own train file
        train = {r.a.strip() for r in read_stsb_csv(stsb_path(lang, "train", DATA))}
        assert set(sample[20 * i : 20 * (i + 1)]) <= train


@needs_data
def test_cli_writes_lines_that_read_back_as_the_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ref" / "reference.txt"
    assert main(["reference", "--out", str(out), "--per-language", "3", "--data-dir", str(DATA)]) == 0
    assert read_lines(out) == sample_reference(DATA, per_language=3)
    assert f"wrote 30 sentences to {out}" in capsys.readouterr().out


def test_a_sentence_with_a_line_break_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sentence 1 is empty or holds a line break"):
        write_reference(tmp_path / "r.txt", ["one", "two\u2028lines"])
    with pytest.raises(ValueError, match="per_language must be >= 1"):
        sample_reference(DATA, per_language=0)


def test_cli_names_a_bad_count_or_a_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.txt"
    assert main(["reference", "--out", str(out), "--per-language", "0", "--data-dir", str(DATA)]) == 2
    assert "error: per_language must be >= 1, got 0" in capsys.readouterr().err
    assert main(["reference", "--out", str(out), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "stsb-de-train.csv.gz" in capsys.readouterr().err and not out.exists()
