"""Language centering: each vector minus the mean vector of its language, then back to unit length.

Why: a multilingual encoder's sentence vectors share a per-language offset (Libovický, Rosa and Fraser
2020, "On the Language Neutrality of Pre-trained Multilingual Representations": their "centering" removes
it and raises Tatoeba-style retrieval for mBERT and XLM-R). The offset says which language a sentence is
in, which translation search must ignore: two sentences of one language look alike by it, a sentence and
its translation look apart by it. Subtracting each language's mean keeps what the sentences of a language
differ by, which is what their meaning is.

The mean of a language is estimated from sentences of that language alone, with no labels and no pairs:
the sentences of an index in that language (the service) or one side of a benchmark's corpus (the
benchmarks, which so model an index holding both sides). A language needs `MIN_SENTENCES` sentences for
its mean to be an estimate rather than a copy of its few sentences (one sentence minus its own mean is
zero).

The service (`POST /search` with `query_lang`) keeps a sum of the stored vectors per language
(`LanguageSums`: counted by the first centred search, then updated by every add and delete), so a language's
mean is always that of the sentences the index holds. Stored vectors stay as they were embedded: a centred
search centres the query on its language's mean, takes the best `candidate_count(k)` stored rows by inner
product with it, and re-ranks those by the centred cosine (`centred_scores`), reading each candidate's
stored vector back. Candidates in a language with fewer than `MIN_SENTENCES` sentences are compared
uncentred (mean zero): too few sentences to estimate their offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

MIN_SENTENCES = 50
_TINY = 1e-12


def language_mean(vectors: np.ndarray) -> np.ndarray:
    """The mean of one language's vectors, float64 [dim]; refuses too few rows (module docstring)."""
    rows = np.asarray(vectors)
    if rows.ndim != 2:
        raise ValueError(f"expected a matrix of vectors, got shape {rows.shape}")
    if rows.shape[0] < MIN_SENTENCES:
        raise ValueError(f"a language mean needs at least {MIN_SENTENCES} sentences, got {rows.shape[0]}")
    return np.asarray(rows.astype(np.float64).mean(axis=0))


def center(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Rows minus `mean`, each scaled back to unit length, float32; a row equal to the mean stays zero.

    The rows are unit vectors in; cosine between the centred rows is then their inner product, so an
    inner-product index searches centred rows as it searches plain ones.
    """
    rows = np.asarray(vectors, dtype=np.float64)
    offset = np.asarray(mean, dtype=np.float64)
    if rows.ndim != 2 or offset.shape != (rows.shape[1],):
        raise ValueError(f"vectors {rows.shape} and mean {offset.shape} do not fit")
    shifted = rows - offset
    norms = np.linalg.norm(shifted, axis=1, keepdims=True)
    return np.asarray(shifted / np.maximum(norms, _TINY), dtype=np.float32)


def center_by_own_mean(vectors: np.ndarray) -> np.ndarray:
    """One language's rows centred on their own mean (the benchmarks' case: a side is one language)."""
    return center(vectors, language_mean(vectors))


class LanguageSums:
    """Per-language sum and count of stored vectors (float64), kept in step with an index's live rows."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}

    def add(self, langs: Sequence[str], vectors: np.ndarray) -> None:
        self._update(langs, vectors, 1)

    def remove(self, langs: Sequence[str], vectors: np.ndarray) -> None:
        self._update(langs, vectors, -1)

    def _update(self, langs: Sequence[str], vectors: np.ndarray, sign: int) -> None:
        rows = np.asarray(vectors, dtype=np.float64)
        if rows.shape != (len(langs), self._dim):
            raise ValueError(f"{len(langs)} languages for vectors of shape {rows.shape}")
        codes = np.asarray(langs, dtype=object)
        for lang in dict.fromkeys(langs):
            chosen = rows[codes == lang]
            count = self._counts.get(lang, 0) + sign * len(chosen)
            if count <= 0:
                self._sums.pop(lang, None)
                self._counts.pop(lang, None)
                continue
            self._sums[lang] = self._sums.get(lang, np.zeros(self._dim)) + sign * chosen.sum(axis=0)
            self._counts[lang] = count

    def count(self, lang: str) -> int:
        return self._counts.get(lang, 0)

    def means(self, langs: Iterable[str]) -> dict[str, np.ndarray]:
        """The mean of each of `langs` that has at least MIN_SENTENCES sentences (the others are left out)."""
        return {
            lang: self._sums[lang] / self._counts[lang]
            for lang in dict.fromkeys(langs)
            if self._counts.get(lang, 0) >= MIN_SENTENCES
        }


def centred_scores(
    query: np.ndarray, candidates: np.ndarray, candidate_langs: Sequence[str], means: dict[str, np.ndarray]
) -> np.ndarray:
    """Cosine of a centred unit query with each stored candidate minus its language's mean (float64 [c]).

    A candidate whose language has no entry in `means` keeps its stored vector (mean zero).
    """
    rows = np.asarray(candidates, dtype=np.float64)
    offsets = np.zeros_like(rows)
    for i, lang in enumerate(candidate_langs):
        mean = means.get(lang)
        if mean is not None:
            offsets[i] = mean
    shifted = rows - offsets
    norms = np.maximum(np.linalg.norm(shifted, axis=1), _TINY)
    return np.asarray(shifted @ np.asarray(query, dtype=np.float64) / norms)
