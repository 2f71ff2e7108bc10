"""Task data readers on the real shared files, their errors on malformed input, and the task metrics.

Counts are the ones the shared data's SOURCE.md tables give; each real file is read once per module.
"""

from __future__ import annotations

import gzip
import os
import re
import zipfile
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest

from export.tasks import TASKS, DataFormatError, LabelVocab, MissingDataError, TaggedSentence, load_task
from export.tasks.ccg import ccg_vocab, load_ccg, read_stagged
from export.tasks.chunking import load_conll2000
from export.tasks.conllu import ConlluSentence, load_ud, read_conllu
from export.tasks.metrics import attachment_scores, chunk_spans, p_at_1, span_f1, tag_accuracy
from export.tasks.pairs import load_sick, load_stsb, read_sick, read_stsb_csv
from export.tasks.ptb import load_ptb_sample, unescape_ptb_word
from export.tasks.retrieval_dev import RETRIEVAL_LANGS, load_retrieval_dev

DATA = Path(os.environ.get("XRET_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")


def _raises_at(path: Path | str, line: int) -> AbstractContextManager[pytest.ExceptionInfo[DataFormatError]]:
    """The error message must start with `file:line:`, the place to fix."""
    return pytest.raises(DataFormatError, match=f"^{re.escape(f'{path}:{line}:')}")


def _row(word_id: str, form: str, head: str, rel: str = "dep") -> str:
    return "\t".join([word_id, form, form.lower(), "X", "XX", "_", head, rel, "_", "_"])


# --- UD / CoNLL-U -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ewt() -> dict[str, list[ConlluSentence]]:
    return {split: load_ud(split, data_dir=DATA) for split in ("train", "dev", "test")}


@needs_data
def test_ewt_counts_match_source_table(ewt: dict[str, list[ConlluSentence]]) -> None:
    sizes = {split: (len(s), sum(len(x.words) for x in s)) for split, s in ewt.items()}
    assert sizes == {"train": (12544, 204577), "dev": (2001, 25147), "test": (2077, 25094)}
    first = ewt["train"][0]
    assert first.sent_id == "weblog-juancole.com_juancole_20051126063000_ENG_20051126_063000-0001"
    assert first.text is not None and first.text.startswith("Al-Zaman : American forces")
    assert first.words[:3] == ("Al", "-", "Zaman") and first.upos[:2] == ("PROPN", "PUNCT")
    assert first.heads[0] == 0 and first.deprels[0] == "root"
    assert len({tag for s in ewt["train"] for tag in s.upos}) == 17
    # multiword tokens appear as their syntactic words only
    assert not any("don't" in s.words for s in ewt["train"])
    assert any(s.words[i : i + 2] == ("do", "n't") for s in ewt["train"][:2000] for i in range(len(s.words)))


def test_conllu_skips_ranges_and_empty_nodes_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "x.conllu.gz"
    lines = [
        "# sent_id = s1",
        "# text = I don't go",
        _row("1", "I", "3", "nsubj"),
        "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
        _row("2", "do", "3", "aux"),
        _row("3", "n't", "0", "root"),
        "3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t3:conj\t_",
        _row("4", "go", "3", "xcomp"),
        "",
        _row("1", "Yes", "0", "root"),
    ]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    first, second = read_conllu(path)
    assert first.words == ("I", "do", "n't", "go") and first.heads == (3, 3, 0, 3)
    assert first.comments == ("sent_id = s1", "text = I don't go") and first.sent_id == "s1"
    assert first.parsed().rels == ("nsubj", "aux", "root", "xcomp")
    assert first.tagged("xpos").tags == ("XX",) * 4
    assert second.words == ("Yes",) and second.sent_id is None


@pytest.mark.parametrize(
    ("bad_row", "problem"),
    [
        ("2\tsaw\tsee\tVERB\tVBD\t_\t0\troot\t_", "expected 10 tab-separated columns, got 9"),
        (_row("2", "saw", "x"), "HEAD 'x' is not a non-negative integer"),
        (_row("2", "saw", "9"), "HEAD 9 points past the last word"),
        (_row("3", "saw", "0"), "word ID 3 out of sequence, expected 2"),
        (_row("2", "saw", "0", "_"), "missing DEPREL"),
        (_row("2", "saw", "2"), "word 2 is its own head"),
    ],
)
def test_conllu_malformed_rows_name_file_and_line(tmp_path: Path, bad_row: str, problem: str) -> None:
    path = tmp_path / "bad.conllu"
    path.write_text("# sent_id = a\n" + _row("1", "I", "0", "root") + "\n\n# c\n" + _row("1", "We", "2") + "\n")
    path.write_text(path.read_text() + bad_row + "\n\n", encoding="utf-8")
    with _raises_at(path, 6) as info:
        read_conllu(path)
    assert problem in str(info.value) and info.value.line == 6


def test_conllu_two_roots_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "roots.conllu"
    path.write_text(_row("1", "A", "0") + "\n" + _row("2", "B", "0") + "\n\n", encoding="utf-8")
    with _raises_at(path, 1) as info:
        read_conllu(path)
    assert "2 root words" in str(info.value)


# --- CoNLL-2000 chunking ------------------------------------------------------------------------------------


@needs_data
def test_conll2000_counts_and_dev_carving() -> None:
    splits = load_conll2000(DATA)
    assert {k: len(v) for k, v in splits.items()} == {"train": 7936, "dev": 1000, "test": 2012}
    tokens = {k: sum(len(s.words) for s in v) for k, v in splits.items()}
    assert tokens["train"] + tokens["dev"] == 211727 and tokens["test"] == 47377
    assert splits["train"][0].words[:3] == ("Confidence", "in", "the")
    assert splits["train"][0].tags[:3] == ("B-NP", "B-PP", "B-NP")
    words = {w for s in splits["train"] for w in s.words}
    assert "(" in words and "-LRB-" not in words and "1/2" in words  # PTB escapes undone


def _write_zip(path: Path, members: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


def test_conll2000_two_column_line_names_member_and_line(tmp_path: Path) -> None:
    zip_path = tmp_path / "nltk_data" / "corpora" / "conll2000.zip"
    train = "He PRP B-NP\nran VBD B-VP\n\nShe PRP\n"
    _write_zip(zip_path, {"conll2000/train.txt": train, "conll2000/test.txt": "a DT B-NP\n"})
    with _raises_at(f"{zip_path}:conll2000/train.txt", 4) as info:
        load_conll2000(tmp_path)
    assert "3 columns), got 2" in str(info.value)


def test_conll2000_missing_member_names_zip_and_folder(tmp_path: Path) -> None:
    zip_path = tmp_path / "nltk_data" / "corpora" / "conll2000.zip"
    _write_zip(zip_path, {"conll2000/test.txt": "a DT B-NP\n"})
    with pytest.raises(MissingDataError, match=r"conll2000/train\.txt.*'nltk_data/'"):
        load_conll2000(tmp_path)


# --- CCG supertags ------------------------------------------------------------------------------------------


@needs_data
def test_ccg_counts_split_and_vocab() -> None:
    splits = load_ccg(DATA)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2096, "dev": 232, "test": 500}
    assert len(splits["train"]) + len(splits["dev"]) == 1328 + 1000
    tokens = {k: sum(len(s.words) for s in v) for k, v in splits.items()}
    assert tokens["train"] + tokens["dev"] == 11161 + 26805 and tokens["test"] == 4078
    assert splits["test"][0].words[0] != "" and splits["train"][0].tags[0] == "(S[wq]/S[q])/(S[wq]/(S[q]/NP))"
    vocab = ccg_vocab(splits["train"])
    assert vocab.labels[0] == "<unk>" and vocab.encode("N") != 0
    assert vocab.encode("never-seen-category") == 0


def test_stagged_splits_on_last_two_bars_and_rejects_short_tokens(tmp_path: Path) -> None:
    good = tmp_path / "good.stagged"
    good.write_text("a|b|NN|N ran|VBD|S[dcl]\\NP\n", encoding="utf-8")
    assert read_stagged(good) == [TaggedSentence(("a|b", "ran"), ("N", "S[dcl]\\NP"))]
    bad = tmp_path / "bad.stagged"
    bad.write_text("What|WP|S[wq]/(S[q]/NP) ?|.|.\nWho|WP is|VBZ|(S[q]/NP)/NP\n", encoding="utf-8")
    with _raises_at(bad, 2) as info:
        read_stagged(bad)
    assert "token 1 'Who|WP'" in str(info.value)


def test_label_vocab_rare_policy() -> None:
    vocab = LabelVocab.build(["A", "A", "B", "C", "C"], min_count=2)
    assert vocab.labels == ("<unk>", "A", "C")
    assert [vocab.encode(t) for t in ("A", "B", "C")] == [1, 0, 2]
    closed = LabelVocab.build(["y", "x"], unk=None)
    assert closed.labels == ("x", "y")
    with pytest.raises(KeyError):
        closed.encode("z")


# --- PTB sample -----------------------------------------------------------------------------------------------


@needs_data
def test_ptb_sample_split_by_file_without_traces() -> None:
    splits = load_ptb_sample(DATA)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3098, "dev": 420, "test": 396}
    sentences = [s for v in splits.values() for s in v]
    assert sum(len(s.words) for s in sentences) == 94084  # 100,676 preterminals minus 6,592 -NONE-
    assert all("-NONE-" not in s.tags for s in sentences)
    assert splits["train"][0].words[:4] == ("Pierre", "Vinken", ",", "61")
    assert splits["train"][0].tags[:4] == ("NNP", "NNP", ",", "CD")
    assert unescape_ptb_word("-LRB-") == "(" and unescape_ptb_word("3\\/4") == "3/4"


def test_ptb_unbalanced_tree_names_member_and_line(tmp_path: Path) -> None:
    zip_path = tmp_path / "nltk_data" / "corpora" / "treebank.zip"
    mrg = "( (S (NP (DT The) (NN cat))\n    (VP (VBD sat))\n    (. .) ))\n)\n"
    _write_zip(zip_path, {"treebank/combined/wsj_0001.mrg": mrg})
    with _raises_at(f"{zip_path}:treebank/combined/wsj_0001.mrg", 4) as info:
        load_ptb_sample(tmp_path)
    assert "never opened" in str(info.value)
    _write_zip(zip_path, {"treebank/combined/wsj_0001.mrg": "( (S (NP (-NONE- *)) (VP (VBD sat)) ))\n"})
    assert load_ptb_sample(tmp_path)["train"] == [TaggedSentence(("sat",), ("VBD",))]


# --- sentence pairs -----------------------------------------------------------------------------------------


@needs_data
def test_stsb_and_sick_counts() -> None:
    sts = load_stsb(DATA)
    assert {k: len(v) for k, v in sts.items()} == {"train": 5749, "dev": 1500, "test": 1379}
    assert sts["dev"][0].a == "A man with a hard hat is dancing." and sts["dev"][0].score == 5.0
    assert all(p.score is not None and 0.0 <= p.score <= 5.0 for v in sts.values() for p in v)
    sick = load_sick(DATA)
    counts = {
        k: {lab: sum(p.label == lab for p in v) for lab in ("NEUTRAL", "ENTAILMENT", "CONTRADICTION")}
        for k, v in sick.items()
    }
    assert counts == {
        "train": {"NEUTRAL": 2536, "ENTAILMENT": 1299, "CONTRADICTION": 665},
        "dev": {"NEUTRAL": 282, "ENTAILMENT": 144, "CONTRADICTION": 74},
        "test": {"NEUTRAL": 2793, "ENTAILMENT": 1414, "CONTRADICTION": 720},
    }
    assert not any(p.b.endswith("\r") for p in sick["test"])  # CRLF file


def test_stsb_csv_malformed_rows(tmp_path: Path) -> None:
    path = tmp_path / "stsb-en-dev.csv"
    path.write_text('"A, quoted",B,1.5\nC,D\n', encoding="utf-8")
    with _raises_at(path, 2) as info:
        read_stsb_csv(path)
    assert "got 2" in str(info.value)
    path.write_text("A,B,1.5\nC,D,7\n", encoding="utf-8")
    with _raises_at(path, 2):
        read_stsb_csv(path)
    path.write_text("A,B,high\n", encoding="utf-8")
    with _raises_at(path, 1):
        read_stsb_csv(path)


def test_sick_malformed_label(tmp_path: Path) -> None:
    path = tmp_path / "SICK_train.txt"
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
    path.write_text(f"{header}\r\n1\tA\tB\t4.5\tNEUTRAL\r\n2\tA\tB\t3.0\tMAYBE\r\n", encoding="utf-8")
    with _raises_at(path, 3) as info:
        read_sick(path)
    assert "'MAYBE'" in str(info.value)


# --- retrieval dev ------------------------------------------------------------------------------------------

EXPECTED_RETRIEVAL_SIZES = {
    "de": 2886, "es": 2895, "fr": 2887, "it": 2896, "ja": 2885,
    "nl": 2894, "pl": 2883, "pt": 2899, "ru": 2866, "zh": 2882,
}  # fmt: skip


@needs_data
def test_retrieval_dev_all_languages_aligned_and_unique() -> None:
    dev = load_retrieval_dev(DATA)
    assert tuple(dev) == RETRIEVAL_LANGS
    assert {lang: len(src) for lang, (src, _) in dev.items()} == EXPECTED_RETRIEVAL_SIZES
    for src, tgt in dev.values():
        assert len(src) == len(tgt) and len(set(src)) == len(src) and len(set(tgt)) == len(tgt)
        assert tgt[0] == "A man with a hard hat is dancing."
    assert dev["de"][0][0] == "Ein Mann mit einem Schutzhelm tanzt."
    # German translates both sentences of row 1 alike, so row 1's sentence2 pair is dropped
    assert dev["de"][1][:2] == ["A man with a hard hat is dancing.", "A young child is riding a horse."]
    assert set(load_retrieval_dev(DATA, langs=["ja"])) == {"ja"}
    with pytest.raises(ValueError, match="'xx'"):
        load_retrieval_dev(DATA, langs=["xx"])


def _write_stsb(folder: Path, lang: str, rows: list[tuple[str, str, str]]) -> None:
    text = "".join(f"{a},{b},{s}\n" for a, b, s in rows)
    folder.mkdir(parents=True, exist_ok=True)
    if lang == "en":
        (folder / "stsb-en-dev.csv").write_text(text, encoding="utf-8")
    else:
        with gzip.open(folder / f"stsb-{lang}-dev.csv.gz", "wt", encoding="utf-8") as handle:
            handle.write(text)


def test_retrieval_dev_misalignment_fails_loudly(tmp_path: Path) -> None:
    folder = tmp_path / "stsb_multi_mt"
    _write_stsb(folder, "en", [("a man", "a dog", "1.0"), ("a cat", "a man", "2.5"), ("a guy", "x", "4.0")])
    rows = [("ein Mann", "ein Hund", "1.0"), ("eine Katze", "ein Mann", "2.5"), ("ein Mann", "x", "4.0")]
    _write_stsb(folder, "de", rows)
    src, tgt = load_retrieval_dev(tmp_path, langs=["de"])["de"]
    assert src == ["ein Mann", "ein Hund", "eine Katze", "x"]  # repeats of either side dropped
    assert tgt == ["a man", "a dog", "a cat", "x"]
    _write_stsb(folder, "de", [rows[0], rows[2], rows[1]])
    with pytest.raises(DataFormatError, match=r"row 2 has score 4\.0 .* has 2\.5: the files are not row-aligned"):
        load_retrieval_dev(tmp_path, langs=["de"])
    _write_stsb(folder, "de", rows[:2])
    with pytest.raises(DataFormatError, match=r"2 rows but .*stsb-en-dev\.csv has 3"):
        load_retrieval_dev(tmp_path, langs=["de"])
    with pytest.raises(MissingDataError, match=r"stsb-fr-dev\.csv\.gz.*'stsb_multi_mt/'"):
        load_retrieval_dev(tmp_path, langs=["fr"])


# --- registry -------------------------------------------------------------------------------------------------


def test_registry_names_and_missing_data_errors(tmp_path: Path) -> None:
    assert set(TASKS) == {"upos", "xpos", "deps", "chunk", "ccg", "sts", "nli"}
    with pytest.raises(ValueError, match="unknown task 'pos'"):
        load_task("pos", tmp_path)
    folders = {"upos": "ud_english", "deps": "ud_english", "xpos": "nltk_data", "chunk": "nltk_data",
               "ccg": "ccg_supertags", "sts": "stsb_multi_mt", "nli": "sick2014"}  # fmt: skip
    for name, folder in folders.items():
        with pytest.raises(MissingDataError, match=f"'{folder}/'") as info:
            load_task(name, tmp_path)
        assert str(tmp_path) in str(info.value)


@needs_data
@pytest.mark.parametrize(
    ("name", "sizes", "n_labels"),
    [
        ("xpos", (3098, 420, 396), 46),
        ("chunk", (7936, 1000, 2012), 23),
        ("ccg", (2096, 232, 500), 162),
        ("sts", (5749, 1500, 1379), None),
        ("nli", (4500, 500, 4927), 3),
    ],
)
def test_registry_task_sizes(name: str, sizes: tuple[int, int, int], n_labels: int | None) -> None:
    task = load_task(name, DATA)
    assert tuple(task.sizes().values()) == sizes
    assert (len(task.labels) if task.labels is not None else None) == n_labels
    assert task.summary().startswith(f"{name}: train {sizes[0]} / dev {sizes[1]} / test {sizes[2]}")


@needs_data
def test_registry_ud_tasks_share_ewt() -> None:
    upos, deps = load_task("upos", DATA), load_task("deps", DATA)
    assert upos.sizes() == deps.sizes() == {"train": 12544, "dev": 2001, "test": 2077}
    assert upos.labels is not None and len(upos.labels) == 18  # 17 UPOS + <unk>
    assert deps.labels is not None and "nmod:poss" in deps.labels.labels
    assert upos.train[0].words == deps.train[0].words


# --- metrics --------------------------------------------------------------------------------------------------


def test_p_at_1_hand_made() -> None:
    eye = np.eye(4, dtype=np.float32)
    assert p_at_1(eye, eye) == 1.0
    assert p_at_1(eye, eye[[1, 0, 2, 3]]) == 0.5  # rows 0 and 1 retrieve each other's gold
    src = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    tgt = np.array([[0.8, 0.6], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    assert p_at_1(src, tgt) == pytest.approx(1 / 3)  # only row 0's nearest target is its gold
    same = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (3, 1))
    assert p_at_1(same, same) == 0.0  # ties never count as hits
    with pytest.raises(ValueError, match="unit vectors"):
        p_at_1(eye * 2, eye)
    with pytest.raises(ValueError, match="one shape"):
        p_at_1(eye, eye[:3])


def test_chunk_spans_follow_conlleval() -> None:
    assert chunk_spans(["B-NP", "I-NP", "O", "B-VP"]) == [("NP", 0, 2), ("VP", 3, 4)]
    assert chunk_spans(["I-NP", "I-NP", "O"]) == [("NP", 0, 2)]  # I- without B- opens a chunk
    assert chunk_spans(["O", "I-NP", "B-NP"]) == [("NP", 1, 2), ("NP", 2, 3)]
    assert chunk_spans(["B-NP", "I-VP", "I-VP"]) == [("NP", 0, 1), ("VP", 1, 3)]  # type change splits
    assert chunk_spans(["B-NP", "<unk>", "I-NP"]) == [("NP", 0, 1), ("NP", 2, 3)]
    assert chunk_spans(["O", "O"]) == []


def test_span_f1_known_answers() -> None:
    gold = [["B-NP", "I-NP", "O", "B-VP"], ["B-PP", "B-NP"]]
    pred = [["B-NP", "I-NP", "O", "B-NP"], ["I-PP", "I-NP"]]
    # sentence 2: I-PP opens PP(0,1), I-NP after PP opens NP(1,2): both correct, as conlleval scores it
    scores = span_f1(gold, pred)
    assert (scores.gold, scores.predicted, scores.correct) == (4, 4, 3)
    assert scores.precision == scores.recall == scores.f1 == 0.75
    partial = span_f1([["B-NP", "I-NP", "I-NP"]], [["B-NP", "I-NP", "O"]])
    assert partial.correct == 0 and partial.f1 == 0.0  # boundary off by one is a miss
    over = span_f1([["B-NP", "O"]], [["B-NP", "B-VP"]])
    assert over.precision == 0.5 and over.recall == 1.0 and over.f1 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="sentence 0"):
        span_f1([["O"]], [["O", "O"]])


def test_attachment_scores_and_accuracy_hand_made() -> None:
    gold_heads, gold_rels = [[2, 0, 2], [0]], [["nsubj", "root", "obj"], ["root"]]
    pred_heads, pred_rels = [[2, 0, 1], [0]], [["nsubj", "root", "obj"], ["dep"]]
    uas, las = attachment_scores(gold_heads, gold_rels, pred_heads, pred_rels)
    assert uas == 0.75 and las == 0.5
    with pytest.raises(ValueError):
        attachment_scores(gold_heads, gold_rels, pred_heads[:1], pred_rels[:1])
    assert tag_accuracy([["A", "B"], ["C"]], [["A", "X"], ["C"]]) == pytest.approx(2 / 3)
