"""The demo's corpus: real Tatoeba slices, and the built-in sample for machines without shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.corpus import SAMPLE, available_langs, demo_corpus, load_tatoeba_pairs, write_sample

TATOEBA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tatoeba"


def test_sample_round_trips_through_the_tatoeba_reader(tmp_path: Path) -> None:
    folder = write_sample(tmp_path / "sample")
    langs = available_langs(folder)
    assert langs == sorted(lang for lang in SAMPLE if lang != "eng")
    xx, en = load_tatoeba_pairs(folder, "deu")
    assert xx == SAMPLE["deu"] and en == SAMPLE["eng"]
    corpus = demo_corpus(folder, langs, per_lang=3)
    # English sides repeat across languages and are indexed once
    assert sum(s.lang == "eng" for s in corpus) == 3
    assert sum(s.lang == "fra" for s in corpus) == 3
    assert len({s.id for s in corpus}) == len(corpus)


def test_missing_and_misaligned_files_are_named(tmp_path: Path) -> None:
    folder = write_sample(tmp_path / "sample")
    with pytest.raises(FileNotFoundError, match=r"tatoeba\.xxx-eng\.xxx"):
        load_tatoeba_pairs(folder, "xxx")
    (folder / "v1" / "tatoeba.fra-eng.fra").write_text("une seule ligne\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 fra lines but 8 English lines"):
        load_tatoeba_pairs(folder, "fra")


@pytest.mark.skipif(not TATOEBA.is_dir(), reason="shared Tatoeba data not present")
def test_real_tatoeba_slice_keeps_translation_pairs_aligned() -> None:
    xx, en = load_tatoeba_pairs(TATOEBA, "deu", limit=20)
    assert len(xx) == len(en) == 20
    corpus = demo_corpus(TATOEBA, ["deu", "fra"], per_lang=20)
    by_id = {s.id: s for s in corpus}
    assert by_id["tatoeba:deu-eng:deu:0"].text == xx[0].strip()
    assert {s.lang for s in corpus} == {"deu", "fra", "eng"}
