"""stsb_multi_mt dev as a retrieval task: the DEV set on which choices (such as hubness rescoring) are made.

Tatoeba and BUCC are test sets: choosing a method by their numbers would leak the test into the choice.
The team's dev set is the stsb_multi_mt dev split in 10 languages, aligned row by row with English and
deduplicated one-to-one by `export.tasks.retrieval_dev` (the loader training and fusion selection use,
so these numbers are comparable with theirs). That module is pure Python (no torch), checked by a test.

Per language, each foreign sentence is searched among that language's English sentences; P@1 is strict
(the gold strictly above every other English sentence), as `export.tasks.metrics.p_at_1` defines it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.retrieval.errors import BenchmarkError
from export.tasks.retrieval_dev import RETRIEVAL_LANGS, load_retrieval_dev

PROTOCOL = (
    "stsb_multi_mt dev (DEV set), one-to-one deduplicated pairs (export.tasks.retrieval_dev); per language, xx "
    "sentences searched among that language's English side; strict P@1 (gold strictly above every other "
    "English sentence) in percent"
)
LANGUAGES: tuple[str, ...] = RETRIEVAL_LANGS


@dataclass
class DevPair:
    """One language: foreign sentences and their English translations, index-aligned (gold of xx[i] is i)."""

    lang: str
    xx: list[str]
    en: list[str]


def load_dev(data_dir: Path, langs: list[str] | None = None, max_sentences: int | None = None) -> list[DevPair]:
    """The dev pairs of `langs` (default all 10); `max_sentences` keeps the first n pairs (quick runs only)."""
    try:
        loaded = load_retrieval_dev(data_dir, langs)
    except (ValueError, FileNotFoundError) as exc:  # DataFormatError / MissingDataError name the file
        raise BenchmarkError(f"stsb-dev: {exc}") from None
    return [DevPair(lang, xx[:max_sentences], en[:max_sentences]) for lang, (xx, en) in loaded.items()]
