"""Sentence-pair tasks kept for comparison with the syntactic ones: STS-B (`sts`) and SICK (`nli`).

STS-B: the standard English train/dev/test split (5,749 / 1,500 / 1,379 pairs) from stsb_multi_mt, scores
0-5 as floats. SICK: the SemEval-2014 Task 1 split. The shared copy has no `SemEval_set` column (that is
only in the single-file SICK.txt release); the split is the three files the task distributed, which is
exactly what that column encodes: SICK_train = TRAIN (4,500), SICK_trial = TRIAL, used as dev (500),
SICK_test_annotated = TEST (4,927). Each pair carries the entailment label and the 1-5 relatedness.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from export.tasks.files import DataFormatError, iter_lines, open_text, require_file, resolve_data_dir
from export.tasks.types import SentencePair

STSB_FOLDER = "stsb_multi_mt"
SICK_FOLDER = "sick2014"
PAIR_SPLITS = ("train", "dev", "test")
SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
SICK_HEADER = ["pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment"]
NLI_LABELS = ("CONTRADICTION", "ENTAILMENT", "NEUTRAL")


def stsb_path(lang: str, split: str, data_dir: str | Path | None = None) -> Path:
    """English is stored as plain CSV, the ten translations gzip-compressed."""
    suffix = ".csv" if lang == "en" else ".csv.gz"
    return resolve_data_dir(data_dir) / STSB_FOLDER / f"stsb-{lang}-{split}{suffix}"


def read_stsb_csv(path: Path) -> list[SentencePair]:
    """Rows `sentence1,sentence2,score` (no header); every score must be a number in [0, 5]."""
    require_file(path, STSB_FOLDER)
    pairs: list[SentencePair] = []
    with open_text(path, newline="") as handle:
        reader = csv.reader(handle)
        for row in reader:
            line = reader.line_num
            if len(row) != 3:
                raise DataFormatError(
                    path, line, f"expected 3 CSV columns (sentence1, sentence2, score), got {len(row)}"
                )
            if not row[0].strip() or not row[1].strip():
                raise DataFormatError(path, line, "empty sentence")
            score = _float_in(row[2], 0.0, 5.0, path, line, "similarity score")
            pairs.append(SentencePair(row[0].strip(), row[1].strip(), score=score))
    return pairs


def load_stsb(data_dir: str | Path | None = None) -> dict[str, list[SentencePair]]:
    """English STS-B, the `sts` task: {"train", "dev", "test"} pairs with `score` set."""
    return {split: read_stsb_csv(stsb_path("en", split, data_dir)) for split in PAIR_SPLITS}


def read_sick(path: Path) -> list[SentencePair]:
    """A SICK tab-separated file: header, then one pair per line with relatedness and entailment label."""
    require_file(path, SICK_FOLDER)
    pairs: list[SentencePair] = []
    for number, line in iter_lines(path):
        columns = line.split("\t")
        if number == 1:
            if columns != SICK_HEADER:
                raise DataFormatError(path, number, f"header {columns} is not {SICK_HEADER}")
            continue
        if not line.strip():
            continue
        if len(columns) != 5:
            raise DataFormatError(path, number, f"expected 5 tab-separated columns, got {len(columns)}")
        if not columns[1].strip() or not columns[2].strip():
            raise DataFormatError(path, number, "empty sentence")
        if columns[4] not in NLI_LABELS:
            raise DataFormatError(path, number, f"entailment label {columns[4]!r} is not one of {NLI_LABELS}")
        relatedness = _float_in(columns[3], 1.0, 5.0, path, number, "relatedness score")
        pairs.append(SentencePair(columns[1].strip(), columns[2].strip(), label=columns[4], score=relatedness))
    return pairs


def load_sick(data_dir: str | Path | None = None) -> dict[str, list[SentencePair]]:
    """SICK, the `nli` task: {"train", "dev" (= trial), "test"} pairs with `label` and `score` set."""
    folder = resolve_data_dir(data_dir) / SICK_FOLDER
    return {split: read_sick(folder / name) for split, name in SICK_FILES.items()}


def _float_in(raw: str, low: float, high: float, path: Path, line: int, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DataFormatError(path, line, f"{what} {raw!r} is not a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise DataFormatError(path, line, f"{what} {value} is outside [{low:g}, {high:g}]")
    return value
