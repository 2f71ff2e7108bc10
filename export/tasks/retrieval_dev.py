"""The retrieval dev set: stsb_multi_mt dev, English aligned row by row with its 10 translations.

This, never Tatoeba, is what training uses for early stopping, WiSE-FT alpha, retention lambda, fusion
weights and member selection, so Tatoeba stays a clean test set. Each STS row gives two translation pairs
(sentence1 and sentence2 in both languages).

Alignment is checked, not assumed: a translation file must have as many rows as the English one and the
same similarity score on every row, else DataFormatError. A one-row shift would otherwise pair every
sentence with its neighbour's translation and silently turn P@1 into noise.

Deduplication keeps a pair only when neither its foreign nor its English sentence is already among the
kept pairs (first occurrence wins, file order), so the kept pairs are one-to-one. STS reuses sentences
across rows, and two English paraphrases can share one translation; either would give a query two equally
valid answers, while P@1 assumes exactly one (tgt i is the gold for src i). So each language ends up with
a slightly different number of pairs (2,866-2,899 of the 3,000 sentence slots).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from export.tasks.files import DataFormatError
from export.tasks.pairs import read_stsb_csv, stsb_path
from export.tasks.types import SentencePair

RETRIEVAL_LANGS = ("de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")


def load_retrieval_dev(
    data_dir: str | Path | None = None, langs: Sequence[str] | None = None
) -> dict[str, tuple[list[str], list[str]]]:
    """{lang: (foreign sentences, English sentences)}, index-aligned; all 10 languages by default."""
    chosen = tuple(langs) if langs is not None else RETRIEVAL_LANGS
    unknown = [lang for lang in chosen if lang not in RETRIEVAL_LANGS]
    if unknown:
        raise ValueError(f"no retrieval dev data for {unknown}; available: {RETRIEVAL_LANGS}")
    english_path = stsb_path("en", "dev", data_dir)
    english = read_stsb_csv(english_path)
    result: dict[str, tuple[list[str], list[str]]] = {}
    for lang in chosen:
        path = stsb_path(lang, "dev", data_dir)
        foreign = read_stsb_csv(path)
        _check_aligned(english, foreign, english_path, path)
        result[lang] = _unique_translation_pairs(foreign, english)
    return result


def _check_aligned(english: list[SentencePair], foreign: list[SentencePair], en_path: Path, path: Path) -> None:
    if len(foreign) != len(english):
        raise DataFormatError(
            path, None, f"{len(foreign)} rows but {en_path} has {len(english)}: the files are not row-aligned"
        )
    for row, (en_pair, xx_pair) in enumerate(zip(english, foreign, strict=True), start=1):
        if en_pair.score != xx_pair.score:
            raise DataFormatError(
                path,
                None,
                f"row {row} has score {xx_pair.score} but row {row} of {en_path} has {en_pair.score}: "
                "the files are not row-aligned",
            )


def _unique_translation_pairs(foreign: list[SentencePair], english: list[SentencePair]) -> tuple[list[str], list[str]]:
    sources: list[str] = []
    targets: list[str] = []
    seen_sources: set[str] = set()
    seen_targets: set[str] = set()
    for xx_pair, en_pair in zip(foreign, english, strict=True):
        for source, target in ((xx_pair.a, en_pair.a), (xx_pair.b, en_pair.b)):
            if source not in seen_sources and target not in seen_targets:
                sources.append(source)
                targets.append(target)
                seen_sources.add(source)
                seen_targets.add(target)
    return sources, targets
