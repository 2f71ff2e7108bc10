"""Request texts from real Tatoeba sentences of many languages.

Requests are drawn round-robin across languages, so every batch the server sees mixes scripts and
lengths the way multilingual traffic does (a run over one language would flatter padding and the
tokenizer). The stream cycles through one fixed, seeded order: a cold-cache run stays cold only
while it asks for fewer texts than the pool holds, which `TextStream.fresh_left` lets callers check.
"""

from __future__ import annotations

import random
from pathlib import Path

DEFAULT_TATOEBA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tatoeba" / "v1"


class NoSentences(ValueError):
    """The Tatoeba folder is missing or holds no sentence files."""


def load_sentences(directory: Path = DEFAULT_TATOEBA, seed: int = 0, limit: int | None = None) -> list[tuple[str, str]]:
    """(lang, text) pairs, unique texts, interleaved across languages in a seeded order."""
    files = sorted(Path(directory).glob("tatoeba.*-eng.*"))
    if not files:
        raise NoSentences(f"{directory}: no tatoeba.<lang>-eng.<lang> files; pass --tatoeba DIR")
    rng = random.Random(seed)
    per_lang: dict[str, list[str]] = {}
    for path in files:
        lang = path.suffix.lstrip(".")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        per_lang.setdefault(lang, []).extend(line for line in lines if line)
    queues = []
    for lang in sorted(per_lang):
        texts = list(dict.fromkeys(per_lang[lang]))
        rng.shuffle(texts)
        queues.append((lang, texts))
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    depth = 0
    while any(depth < len(texts) for _, texts in queues):
        for lang, texts in queues:
            if depth < len(texts) and texts[depth] not in seen:
                seen.add(texts[depth])
                out.append((lang, texts[depth]))
                if limit is not None and len(out) >= limit:
                    return out
        depth += 1
    return out


class TextStream:
    """Texts for consecutive requests, `per_request` at a time, cycling through a fixed pool."""

    def __init__(self, texts: list[str], per_request: int) -> None:
        if not texts:
            raise NoSentences("the text pool is empty")
        if per_request < 1:
            raise ValueError(f"texts per request must be >= 1, got {per_request}")
        self._texts = texts
        self._per_request = per_request
        self._next = 0

    @property
    def per_request(self) -> int:
        return self._per_request

    @property
    def fresh_left(self) -> int:
        """Texts not yet handed out in this stream's life (before the pool starts repeating)."""
        return max(0, len(self._texts) - self._next)

    def take(self) -> list[str]:
        """The next request's texts."""
        n = len(self._texts)
        start = self._next
        self._next += self._per_request
        return [self._texts[(start + i) % n] for i in range(self._per_request)]
