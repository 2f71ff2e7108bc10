"""Tatoeba (LASER v1) under the XTREME protocol.

Per language xxx the files `v1/tatoeba.xxx-eng.xxx` and `v1/tatoeba.xxx-eng.eng` are line-aligned
translations; the English sides differ between languages, so each language is searched against the
English side of its own file. As XTREME's `tatoeba_preprocess` does, the English side is sorted
(stably) and the gold is the position of the true translation in that sorted list; P@1 counts a hit
only at that position. xx->en is the XTREME score; en->xx (English queries, xx side as the base) is
reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.retrieval.errors import BenchmarkError
from benchmarks.retrieval.metrics import correct_at_1
from benchmarks.retrieval.neighbours import knn
from benchmarks.retrieval.textfile import read_lines

LANGUAGE_SETS = ("xtreme36", "xtreme_r41", "all112")
FLAGS = ("0", "1")
LANGUAGES_HEADER = ["iso639_3", "xtreme_code", "in_xtreme", "in_xtreme_r", "n_pairs"]


@dataclass(frozen=True)
class Language:
    """One row of `languages.tsv`."""

    iso3: str
    xtreme_code: str
    in_xtreme: bool
    in_xtreme_r: bool
    n_pairs: int

    @property
    def code(self) -> str:
        """The name tables show: XTREME's two-letter code where it has one, else the ISO 639-3 code."""
        return self.xtreme_code or self.iso3


def tatoeba_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "tatoeba"


def read_languages(data_dir: Path) -> list[Language]:
    """All 112 languages; a malformed row stops the run, naming the line."""
    path = tatoeba_dir(data_dir) / "languages.tsv"
    lines = read_lines(path)
    if not lines or lines[0].split("\t") != LANGUAGES_HEADER:
        raise BenchmarkError(f"{path}:1: header must be {' '.join(LANGUAGES_HEADER)} (tab-separated)")
    out: list[Language] = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != 5 or not cells[0] or cells[2] not in FLAGS or cells[3] not in FLAGS or not cells[4].isdigit():
            raise BenchmarkError(f"{path}:{number}: expected iso639_3, xtreme_code, 0/1, 0/1, n_pairs; got {line!r}")
        out.append(Language(cells[0], cells[1], cells[2] == "1", cells[3] == "1", int(cells[4])))
    return out


def select_languages(languages: list[Language], language_set: str, only: list[str] | None = None) -> list[Language]:
    """The languages of a named set, optionally narrowed to `only` (ISO 639-3 or XTREME codes)."""
    if language_set == "xtreme36":
        chosen = [lang for lang in languages if lang.in_xtreme]
    elif language_set == "xtreme_r41":
        chosen = [lang for lang in languages if lang.in_xtreme_r]
    elif language_set == "all112":
        chosen = list(languages)
    else:
        raise BenchmarkError(f"unknown language set {language_set!r}; choose one of {', '.join(LANGUAGE_SETS)}")
    if not only:
        return chosen
    by_name = {name: lang for lang in chosen for name in (lang.iso3, lang.xtreme_code) if name}
    missing = [name for name in only if name not in by_name]
    if missing:
        raise BenchmarkError(f"language(s) {', '.join(missing)} not in the language set {language_set}")
    wanted = {by_name[name] for name in only}
    return [lang for lang in chosen if lang in wanted]


@dataclass
class TatoebaPair:
    """One language, ready to search: xx sentences, sorted English sentences, gold positions."""

    language: Language
    xx: list[str]
    en: list[str]
    gold: np.ndarray  # gold[i] = position in `en` of the translation of xx[i]


def load_pair(data_dir: Path, language: Language, max_sentences: int | None = None) -> TatoebaPair:
    """Read and check both sides; `max_sentences` keeps the first n pairs (for quick runs only)."""
    base = tatoeba_dir(data_dir) / "v1"
    xx_path = base / f"tatoeba.{language.iso3}-eng.{language.iso3}"
    en_path = base / f"tatoeba.{language.iso3}-eng.eng"
    xx, en = read_lines(xx_path), read_lines(en_path)
    for path, lines in ((xx_path, xx), (en_path, en)):
        if len(lines) != language.n_pairs:
            raise BenchmarkError(f"{path}: {len(lines)} lines, languages.tsv says {language.n_pairs}")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise BenchmarkError(f"{path}:{number}: empty sentence")
    xx = [s.strip() for s in xx[:max_sentences]]
    en = [s.strip() for s in en[:max_sentences]]
    order = sorted(range(len(en)), key=lambda i: en[i])  # stable, as XTREME's sorted()
    gold = np.empty(len(en), dtype=np.int64)
    gold[order] = np.arange(len(en))
    return TatoebaPair(language=language, xx=xx, en=[en[i] for i in order], gold=gold)


def evaluate(xx_vectors: np.ndarray, en_vectors: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query hits (bool) xx->en and en->xx of exact nearest-neighbour search."""
    _, nearest_en = knn(xx_vectors, en_vectors, 1)
    _, nearest_xx = knn(en_vectors, xx_vectors, 1)
    inverse = np.empty_like(gold)
    inverse[gold] = np.arange(gold.size)
    return correct_at_1(nearest_en[:, 0], gold), correct_at_1(nearest_xx[:, 0], inverse)
