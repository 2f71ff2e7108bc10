"""The hubness reference: a fixed sample of sentences in many languages that stands in for future queries.

Why: ratio-margin / CSLS rescoring discounts a candidate by r_y, how close it sits to the *queries' side*.
A service cannot know its future queries, and the stand-in it used before (r_y among the indexed sentences
themselves) measured monolingual crowding and lowered P@1 (stop 7: -2.2 on dev). Measuring r_y against a
reference sample of other-language sentences keeps what makes a hub a hub across languages.

The default sample is drawn from the stsb_multi_mt *train* split (the ten translated languages, first
sentence of each pair): never from dev (where rescoring is decided) nor from Tatoeba / BUCC (test sets).
Written one sentence per line, UTF-8, LF, in a fixed order for a given seed, so its sha256 names it.
"""

from __future__ import annotations

import random
from pathlib import Path

from export.tasks.pairs import read_stsb_csv, stsb_path
from export.tasks.retrieval_dev import RETRIEVAL_LANGS

DEFAULT_PER_LANGUAGE = 1000
_BREAKS = ("\n", "\r", "\u2028", "\u2029", "\x85")  # a line break inside a sentence would split it in two


def sample_reference(
    data_dir: str | Path | None = None,
    per_language: int = DEFAULT_PER_LANGUAGE,
    seed: int = 0,
    langs: tuple[str, ...] = RETRIEVAL_LANGS,
) -> list[str]:
    """`per_language` distinct train sentences of each language in `langs`, shuffled with `seed`.

    Fewer when a language has fewer distinct sentences; sentences holding a line break are left out.
    """
    if per_language < 1:
        raise ValueError(f"per_language must be >= 1, got {per_language}")
    rng = random.Random(seed)
    out: list[str] = []
    for lang in langs:
        rows = read_stsb_csv(stsb_path(lang, "train", data_dir))
        sentences = sorted({r.a.strip() for r in rows if r.a.strip() and not any(b in r.a for b in _BREAKS)})
        rng.shuffle(sentences)
        out.extend(sentences[:per_language])
    return out


def write_reference(path: Path, sentences: list[str]) -> Path:
    """One sentence per line (UTF-8, LF); refuses a sentence that would not read back as one line."""
    bad = [i for i, s in enumerate(sentences) if not s.strip() or any(b in s for b in _BREAKS)]
    if bad:
        raise ValueError(f"sentence {bad[0]} is empty or holds a line break; a reference line must be one sentence")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    return path
