"""Sentences to index for the demo: Tatoeba from the shared data folder, or a built-in sample.

The sample exists so the demo still shows cross-lingual retrieval on a machine without the
shared data; it is written to disk in the same layout as Tatoeba so one reader serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEMO_LANGS = ("deu", "fra", "spa", "ita", "rus", "cmn", "jpn", "ara", "hin", "tur")

# A few parallel sentences (English + translations) for machines without ../shared/data.
SAMPLE: dict[str, list[str]] = {
    "eng": [
        "I am hungry.",
        "Where is the train station?",
        "The weather is nice today.",
        "I love reading books.",
        "My brother lives in Berlin.",
        "Please close the door.",
        "How much does this cost?",
        "The cat is sleeping on the sofa.",
    ],
    "deu": [
        "Ich habe Hunger.",
        "Wo ist der Bahnhof?",
        "Das Wetter ist heute schön.",
        "Ich lese sehr gern Bücher.",
        "Mein Bruder wohnt in Berlin.",
        "Bitte schließ die Tür.",
        "Wie viel kostet das?",
        "Die Katze schläft auf dem Sofa.",
    ],
    "fra": [
        "J'ai faim.",
        "Où est la gare ?",
        "Il fait beau aujourd'hui.",
        "J'adore lire des livres.",
        "Mon frère habite à Berlin.",
        "Ferme la porte, s'il te plaît.",
        "Combien ça coûte ?",
        "Le chat dort sur le canapé.",
    ],
    "spa": [
        "Tengo hambre.",
        "¿Dónde está la estación de tren?",
        "Hoy hace buen tiempo.",
        "Me encanta leer libros.",
        "Mi hermano vive en Berlín.",
        "Por favor, cierra la puerta.",
        "¿Cuánto cuesta esto?",
        "El gato está durmiendo en el sofá.",
    ],
    "rus": [
        "Я голоден.",
        "Где вокзал?",
        "Сегодня хорошая погода.",
        "Я люблю читать книги.",
        "Мой брат живёт в Берлине.",
        "Закрой, пожалуйста, дверь.",
        "Сколько это стоит?",
        "Кошка спит на диване.",
    ],
    "jpn": [
        "お腹が空いた。",
        "駅はどこですか。",
        "今日は天気がいいです。",
        "本を読むのが大好きです。",
        "兄はベルリンに住んでいます。",
        "ドアを閉めてください。",
        "これはいくらですか。",
        "猫がソファーで寝ています。",
    ],
}


@dataclass
class CorpusSentence:
    """One sentence to index; `pair` links a translation to its English side."""

    id: str
    text: str
    lang: str


def write_sample(folder: Path) -> Path:
    """Write the built-in sample in Tatoeba's layout (tatoeba.xxx-eng.xxx / .eng) and return it."""
    v1 = folder / "v1"
    v1.mkdir(parents=True, exist_ok=True)
    for lang, lines in SAMPLE.items():
        if lang == "eng":
            continue
        (v1 / f"tatoeba.{lang}-eng.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (v1 / f"tatoeba.{lang}-eng.eng").write_text("\n".join(SAMPLE["eng"]) + "\n", encoding="utf-8")
    return folder


def available_langs(tatoeba: Path) -> list[str]:
    """Languages present in a Tatoeba-layout folder (ISO 639-3 file codes)."""
    return sorted(p.name.split(".")[1].split("-")[0] for p in (tatoeba / "v1").glob("tatoeba.*-eng.eng"))


def load_tatoeba_pairs(tatoeba: Path, lang: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(xx side, English side) of one language; line i of each is a translation pair."""
    stem = tatoeba / "v1" / f"tatoeba.{lang}-eng"
    xx_path, en_path = Path(f"{stem}.{lang}"), Path(f"{stem}.eng")
    for path in (xx_path, en_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Tatoeba file missing for language {lang!r}")
    xx = xx_path.read_text(encoding="utf-8").splitlines()
    en = en_path.read_text(encoding="utf-8").splitlines()
    if len(xx) != len(en):
        raise ValueError(f"{stem}.*: {len(xx)} {lang} lines but {len(en)} English lines")
    return xx[:limit], en[:limit]


def demo_corpus(tatoeba: Path, langs: list[str], per_lang: int) -> list[CorpusSentence]:
    """xx and English sides of each language, deduplicated by (lang, text), with stable ids."""
    seen: set[tuple[str, str]] = set()
    out: list[CorpusSentence] = []
    for lang in langs:
        xx, en = load_tatoeba_pairs(tatoeba, lang, per_lang)
        for i, (a, b) in enumerate(zip(xx, en, strict=True)):
            for code, text, side in ((lang, a, lang), ("eng", b, "eng")):
                text = text.strip()
                if text and (code, text) not in seen:
                    seen.add((code, text))
                    out.append(CorpusSentence(id=f"tatoeba:{lang}-eng:{side}:{i}", text=text, lang=code))
    return out
