"""Intermediate-task training on the tiny random encoder with small real slices of the shared data.

What must hold for the study to mean anything: each task kind learns (loss goes down), labels sit on the
right sub-tokens, the retention loss measures drift from the base, LoRA / top:N freeze what they claim,
WiSE-FT and soups do the arithmetic they claim, runs repeat exactly and resume exactly, and the saved
checkpoint is a plain encoder with the head gone.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from export.tasks import TaggedSentence, TaskData, load_task
from export.tasks.retrieval_dev import load_retrieval_dev
from export.train import TrainConfig, TrainConfigError, Trainer, WeightSpaceError, interpolate, soup, train_on
from export.train.cli import main as cli_main
from export.train.features import IGNORE, WordExample, build_examples, collate, encode_words
from export.train.loop import LOG_FILE, RESUME_DIR, STATE_FILE, SUMMARY_FILE, _pad_states
from export.train.lora import LoRALinear, merge_lora

DATA = Path(os.environ.get("XRET_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
PREFIX = "query: "


@functools.cache
def small_task(name: str, n_train: int = 48, n_eval: int = 12) -> TaskData[Any]:
    """The first sentences/pairs of each real split (vocabularies stay those of the full train split)."""
    task = load_task(name, DATA)
    return dataclasses.replace(task, train=task.train[:n_train], dev=task.dev[:n_eval], test=task.test[:n_eval])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP workers waiting for a
    descheduled sibling made every op about 30x slower (15 s instead of 0.5 s for 12 steps)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def retrieval() -> dict[str, tuple[list[str], list[str]]]:
    src, tgt = load_retrieval_dev(DATA, ["de"])["de"]
    return {"de": (src[:16], tgt[:16])}


def config(task: str, **overrides: Any) -> TrainConfig:
    """Fast settings for the tiny model: high learning rates, no warm-up, evaluation only at the end."""
    knobs: dict[str, Any] = {
        "task": task,
        "steps": 8,
        "batch_size": 8,
        "max_length": 32,
        "warmup": 0.0,
        "lr_encoder": 1e-3,
        "lr_head": 1e-2,
        "eval_every": 1000,
        "eval_task_sample": 12,
        "eval_retrieval_sample": 16,
        "dev_retrieval_langs": ("de",),
        "eval_full_base": False,
    }
    knobs.update(overrides)
    return TrainConfig(**knobs)


def trainer(
    checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]], task: str, **overrides: Any
) -> Trainer:
    return Trainer(config(task, **overrides), checkpoint, small_task(task), retrieval, progress=False)


def encoder_state(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.encoder.state_dict().items()}


# --- learning --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["upos", "deps", "sts", "nli"])
def test_a_few_steps_lower_the_training_loss(
    task: str, tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]]
) -> None:
    t = trainer(tiny_checkpoint, retrieval, task, steps=12)
    probe = list(range(16))
    before, _ = t.eval_losses(probe)
    for _ in range(12):
        t.train_step()
    after, _ = t.eval_losses(probe)
    assert after < 0.9 * before, f"{task}: loss {before:.4f} -> {after:.4f}"


def test_probe_fits_the_head_on_the_frozen_encoder_first(
    tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]], tmp_path: Path
) -> None:
    t = Trainer(config("deps", probe_steps=12), tiny_checkpoint, small_task("deps"), retrieval, work_dir=tmp_path)
    t.start_log()
    before_state = encoder_state(t)
    before, _ = t.eval_losses(list(range(16)))
    t._record_eval(t.evaluate(), candidate=False)
    cache: dict[int, list[torch.Tensor]] = {}
    t._cache_states(cache, list(range(8)))
    batch = t.batch(list(range(8)))
    t.head.eval()
    with torch.no_grad():
        states = [t.encoder(input_ids=i, attention_mask=m).last_hidden_state for i, m in batch.texts]
        direct = t.head.loss(states, batch)
        cached = t.head.loss([_pad_states([cache[i][0] for i in range(8)], batch.texts[0][0].shape[1])], batch)
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)  # cached states are the encoder's own
    t.probe()
    after, _ = t.eval_losses(list(range(16)))
    assert after < 0.9 * before, f"probe: loss {before:.4f} -> {after:.4f}"
    assert all(torch.equal(v, encoder_state(t)[k]) for k, v in before_state.items())
    assert t.step == 0 and t.probe_step == 12 and t.history[-1]["eval"] == "probe"
    # the state written after the probe resumes into the joint phase without probing again
    resumed = Trainer(config("deps", probe_steps=12), tiny_checkpoint, small_task("deps"), retrieval, work_dir=tmp_path)
    resumed.load_state(tmp_path / RESUME_DIR / STATE_FILE)
    assert resumed.probe_step == 12
    assert resumed.run() and resumed.step == 8
    assert sum(1 for e in resumed.history if e.get("eval") == "probe") == 1


@pytest.mark.parametrize("task", ["sts", "nli"])
def test_probe_fits_a_pair_head_on_both_sides_cached_states(
    task: str, tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]]
) -> None:
    """The semantic members get the same LP-FT probe as the syntactic ones: a fair comparison needs it."""
    t = Trainer(config(task, probe_steps=40), tiny_checkpoint, small_task(task), retrieval)
    before_state = encoder_state(t)
    cache: dict[int, list[torch.Tensor]] = {}
    t._cache_states(cache, list(range(8)))
    batch = t.batch(list(range(8)))
    assert all(len(cache[i]) == 2 for i in range(8))  # one state tensor per side of the pair
    t.head.eval()
    with torch.no_grad():
        states = [t.encoder(input_ids=i, attention_mask=m).last_hidden_state for i, m in batch.texts]
        direct = t.head.loss(states, batch)
        padded = [
            _pad_states([cache[i][side] for i in range(8)], ids.shape[1]) for side, (ids, _) in enumerate(batch.texts)
        ]
        torch.testing.assert_close(t.head.loss(padded, batch), direct, rtol=1e-5, atol=1e-5)
    before, _ = t.eval_losses(list(range(16)))
    t.probe()
    after, _ = t.eval_losses(list(range(16)))
    assert after < before, f"{task} probe: loss {before:.4f} -> {after:.4f}"
    assert all(torch.equal(v, encoder_state(t)[k]) for k, v in before_state.items())


def test_shuffled_labels_keep_the_counts_and_lose_the_words(
    tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]]
) -> None:
    plain = trainer(tiny_checkpoint, retrieval, "upos")
    control = trainer(tiny_checkpoint, retrieval, "upos", shuffle_labels=True)
    before = [label for e in plain.examples for label in e.labels]  # type: ignore[union-attr]
    after = [label for e in control.examples for label in e.labels]  # type: ignore[union-attr]
    assert sorted(before) == sorted(after) and before != after
    assert [len(e.labels) for e in control.examples] == [len(e.labels) for e in plain.examples]  # type: ignore[union-attr]
    with pytest.raises(TrainConfigError, match="tagging"):
        trainer(tiny_checkpoint, retrieval, "deps", shuffle_labels=True)
    with pytest.raises(TrainConfigError, match="multi"):
        config("multi", shuffle_labels=True)


# --- features ----------------------------------------------------------------------------------------------


def test_labels_sit_on_the_first_sub_token_only(tiny_checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    words = ("The", "unbelievably", "cat")
    [(ids, first)] = encode_words(tokenizer, [words], PREFIX, max_length=64)
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    # the member sees exactly this string: prefix, words joined by spaces, specials around
    assert list(ids) == tokenizer(PREFIX + " ".join(words))["input_ids"]
    prefix_pieces = len(tokenizer(PREFIX.strip(), add_special_tokens=False)["input_ids"])
    assert first[0] == 1 + prefix_pieces  # <s>, then the prefix pieces, then "The"
    long_word_pieces = first[2] - first[1]
    assert long_word_pieces > 2, pieces  # the example really splits a word into several pieces
    assert "".join(pieces[first[1] : first[2]]).replace("▁", "") == "unbelievably"

    batch = collate("tagging", [WordExample(ids, first, (5, 6, 7))], pad_id=tokenizer.pad_token_id)
    labels = batch.targets["labels"][0].tolist()
    expected = [IGNORE] * len(ids)
    expected[first[0]], expected[first[1]], expected[first[2]] = 5, 6, 7
    assert labels == expected  # -100 on <s>, prefix, continuation pieces and </s>


def test_real_sentences_tokenise_as_the_member_will_see_them(tiny_checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    task = small_task("upos", n_train=30)
    examples = build_examples(task, task.train, tokenizer, PREFIX, max_length=128)
    for record, example in zip(task.train, examples, strict=True):
        assert isinstance(record, TaggedSentence) and isinstance(example, WordExample)
        member_ids = tokenizer(PREFIX + " ".join(record.words), truncation=True, max_length=128)["input_ids"]
        assert list(example.ids) == member_ids
        kept = [p for p in example.first_token if p >= 0]
        assert kept == sorted(set(kept)) and kept[0] > 1  # one distinct first piece per word, after the prefix
        assert len(kept) == len(record.words) or len(member_ids) == 128  # only truncation loses words


def test_truncated_words_are_not_trained_and_dangling_arcs_are_ignored(tiny_checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    [(ids, first)] = encode_words(tokenizer, [("a", "b", "c", "d", "e", "f")], PREFIX, max_length=8)
    assert len(ids) == 8 and first[-1] == -1 and first[0] > 0
    kept = sum(p >= 0 for p in first)
    # word 1 is the root; every other word hangs on the last word, which is cut off
    example = WordExample(ids, first, labels=(1, 2, 2, 2, 2, 2), heads=(0, 6, 6, 6, 6, 1))
    batch = collate("parsing", [example], pad_id=tokenizer.pad_token_id)
    heads = batch.targets["heads"][0].tolist()
    assert heads[1] == 0 and all(h == IGNORE for h in heads[2:])
    assert batch.targets["word_mask"][0].tolist() == [True] * (1 + kept) + [False] * (6 - kept)


# --- retention, freezing ---------------------------------------------------------------------------------


def test_retention_loss_is_zero_at_start_and_grows_as_weights_move(
    tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]]
) -> None:
    t = trainer(tiny_checkpoint, retrieval, "upos", retention_lambda=1.0)
    probe = list(range(8))
    _, start = t.eval_losses(probe)
    assert abs(start) < 1e-6
    for _ in range(4):
        t.train_step()
    _, later = t.eval_losses(probe)
    assert later > 1e-4
    mse = trainer(tiny_checkpoint, retrieval, "upos", retention_lambda=1.0, retention_loss="mse")
    assert abs(mse.eval_losses(probe)[1]) < 1e-10


def test_lora_trains_only_the_adapters_and_merges_exactly(
    tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]]
) -> None:
    rank = 4
    t = trainer(tiny_checkpoint, retrieval, "upos", train_layers="lora", lora_rank=rank)
    cfg = t.encoder.config
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    # per layer: query, key, value, attention output (h -> h) and the FFN pair (h -> i, i -> h)
    expected = n * (4 * rank * (h + h) + rank * (h + i) + rank * (i + h))
    assert sum(p.numel() for p in t.encoder.parameters() if p.requires_grad) == expected
    frozen_before = {k: v.clone() for k, v in t.encoder.state_dict().items() if "lora_" not in k}
    for _ in range(3):
        t.train_step()
    after = t.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen_before.items())
    assert any(m.lora_b.abs().sum() > 0 for m in t.encoder.modules() if isinstance(m, LoRALinear))

    t.encoder.eval()
    ids, mask = t.batch([0, 1]).texts[0]
    with torch.no_grad():
        wrapped = t.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        assert merge_lora(t.encoder) == n * 6
        merged = t.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not any(isinstance(m, LoRALinear) for m in t.encoder.modules())
    assert torch.allclose(wrapped, merged, atol=1e-5)
    assert set(t.encoder.state_dict()) == set(AutoModel.from_pretrained(tiny_checkpoint).state_dict())


def test_top_layers_freezes_embeddings_and_lower_layers(
    tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]]
) -> None:
    t = trainer(tiny_checkpoint, retrieval, "upos", train_layers="top:1")
    top = t.encoder.encoder.layer[-1]
    assert sum(p.numel() for p in t.encoder.parameters() if p.requires_grad) == sum(p.numel() for p in top.parameters())
    before = encoder_state(t)
    for _ in range(3):
        t.train_step()
    after = t.encoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("encoder.layer.1.") for k in moved)
    with pytest.raises(TrainConfigError, match="top:3"):
        trainer(tiny_checkpoint, retrieval, "upos", train_layers="top:3")


# --- weight space ----------------------------------------------------------------------------------------


def test_wise_endpoints_and_soup_mean(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from export.tiny import build_tiny_checkpoint

    other = build_tiny_checkpoint(tmp_path / "seed1", seed=1)
    a = AutoModel.from_pretrained(tiny_checkpoint).state_dict()
    b = AutoModel.from_pretrained(other).state_dict()
    assert all(torch.equal(v, a[k]) for k, v in interpolate(a, b, 0.0).items())
    assert all(torch.equal(v, b[k]) for k, v in interpolate(a, b, 1.0).items())
    souped = AutoModel.from_pretrained(soup([tiny_checkpoint, other], None, tmp_path / "soup")).state_dict()
    for key, value in souped.items():
        if value.is_floating_point():
            assert torch.allclose(value, (a[key] + b[key]) / 2, atol=1e-7), key
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(souped[query], a[query])

    shallow = AutoModel.from_pretrained(other)
    shallow.encoder.layer = shallow.encoder.layer[:1]
    shallow.config.num_hidden_layers = 1
    shallow.save_pretrained(tmp_path / "shallow")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "shallow" / name).write_bytes((tiny_checkpoint / name).read_bytes())
    with pytest.raises(WeightSpaceError, match="num_hidden_layers"):
        soup([tiny_checkpoint, tmp_path / "shallow"], None, tmp_path / "bad")
    with pytest.raises(WeightSpaceError, match="not the same architecture"):
        interpolate(a, shallow.state_dict(), 0.5)


# --- reproducibility -------------------------------------------------------------------------------------


def test_same_seed_same_weights(tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]]) -> None:
    runs = []
    for seed in (3, 3, 4):
        t = trainer(tiny_checkpoint, retrieval, "upos", seed=seed)
        for _ in range(3):
            t.train_step()
        runs.append({**encoder_state(t), **{f"head.{k}": v for k, v in t.head.state_dict().items()}})
    assert all(torch.equal(v, runs[1][k]) for k, v in runs[0].items())
    assert not all(torch.equal(v, runs[2][k]) for k, v in runs[0].items())


@pytest.fixture(scope="module")
def uninterrupted(
    tiny_checkpoint: Path, retrieval: dict[str, tuple[list[str], list[str]]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = train_on(config("upos", steps=4), tiny_checkpoint, out, small_task("upos"), retrieval, progress=False)
    return out, summary


def test_resume_equals_an_uninterrupted_run(
    uninterrupted: tuple[Path, dict[str, Any]],
    tiny_checkpoint: Path,
    retrieval: dict[str, tuple[list[str], list[str]]],
    tmp_path: Path,
) -> None:
    cfg = config("upos", steps=4)
    paused = train_on(cfg, tiny_checkpoint, tmp_path, small_task("upos"), retrieval, stop_after=2, progress=False)
    assert paused["completed"] is False and paused["step"] == 2
    assert (tmp_path / RESUME_DIR).is_dir() and not (tmp_path / SUMMARY_FILE).exists()
    with pytest.raises(TrainConfigError, match="lr_head"):
        train_on(config("upos", steps=4, lr_head=0.5), tiny_checkpoint, tmp_path, small_task("upos"), retrieval)
    train_on(cfg, tiny_checkpoint, tmp_path, small_task("upos"), retrieval, progress=False)
    resumed = AutoModel.from_pretrained(tmp_path).state_dict()
    reference = AutoModel.from_pretrained(uninterrupted[0]).state_dict()
    assert all(torch.allclose(v, reference[k], atol=1e-6) for k, v in resumed.items())
    entries = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    trained = [entry["step"] for entry in entries if "loss" in entry]
    assert trained == [1, 2, 3, 4]  # no step logged twice across the pause
    assert not (tmp_path / RESUME_DIR).exists()


def test_saved_checkpoint_is_the_encoder_without_its_head(
    uninterrupted: tuple[Path, dict[str, Any]], tiny_checkpoint: Path
) -> None:
    out, summary = uninterrupted
    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not any("classifier" in k or "head" in k for k in model.state_dict())
    assert (out / "tokenizer.json").read_bytes() == (tiny_checkpoint / "tokenizer.json").read_bytes()
    on_disk = json.loads((out / SUMMARY_FILE).read_text())
    assert on_disk == json.loads(json.dumps(summary))
    training, scores = on_disk["training"], on_disk["scores"]
    assert training["lr_encoder"] == 1e-3 and training["steps_done"] == 4 and training["pool_layer"] == 2
    assert training["text_prefix"] == PREFIX and training["wise_alpha"] == 1.0
    assert 0.0 <= scores["dev"]["accuracy"] <= 1.0 and 0.0 <= scores["test"]["accuracy"] <= 1.0
    assert set(scores["retrieval_dev_p1_by_lang"]) == {"de", "mean"}


# --- configuration and CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "named"),
    [
        ({"task": "pos"}, "task"),
        ({"task": "upos", "train_layers": "top:x"}, "train_layers"),
        ({"task": "upos", "text_prefix": "query:"}, "text_prefix"),
        ({"task": "upos", "wise_alpha": (0.5, 1.5)}, "wise_alpha"),
        ({"task": "upos", "dev_retrieval_langs": ("xx",)}, "dev_retrieval_langs"),
    ],
)
def test_bad_knobs_are_named(knobs: dict[str, Any], named: str) -> None:
    with pytest.raises(TrainConfigError, match=named):
        TrainConfig(**knobs)


def _slice_data(target: Path, sentences: int = 30, rows: int = 20) -> Path:
    """A data folder holding the first sentences/rows of the real EWT and stsb_multi_mt dev files."""
    (target / "ud_english").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        name = f"ud_english/en_ewt-ud-{split}.conllu.gz"
        kept, blank = [], 0
        with gzip.open(DATA / name, "rt", encoding="utf-8") as handle:
            for line in handle:
                kept.append(line)
                blank += not line.strip()
                if blank == sentences:
                    break
        with gzip.open(target / name, "wt", encoding="utf-8") as handle:
            handle.writelines(kept)
    (target / "stsb_multi_mt").mkdir()
    en = (DATA / "stsb_multi_mt/stsb-en-dev.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (target / "stsb_multi_mt/stsb-en-dev.csv").write_text("".join(en[:rows]), encoding="utf-8")
    with gzip.open(DATA / "stsb_multi_mt/stsb-de-dev.csv.gz", "rt", encoding="utf-8") as handle:
        de = handle.readlines()[:rows]
    with gzip.open(target / "stsb_multi_mt/stsb-de-dev.csv.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(de)
    return target


def test_cli_trains_a_member_and_names_bad_input(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _slice_data(tmp_path / "data")
    out = tmp_path / "member"
    common = ["--base", str(tiny_checkpoint), "--data-dir", str(data), "--dev-retrieval-langs", "de", "--no-progress"]
    args = ["--task", "upos", "--out", str(out), "--steps", "2", "--max-length", "32", "--eval-every", "1", *common]
    assert cli_main(args) == 0
    assert "upos: dev accuracy" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / SUMMARY_FILE).is_file()

    assert cli_main(["--task", "upos", "--out", str(tmp_path / "x"), "--train-layers", "some", *common]) == 2
    assert "train_layers" in capsys.readouterr().err
    (data / "ud_english/en_ewt-ud-dev.conllu.gz").unlink()
    assert cli_main(["--task", "upos", "--out", str(tmp_path / "y"), *common]) == 2
    assert "en_ewt-ud-dev.conllu.gz" in capsys.readouterr().err
