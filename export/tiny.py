"""A tiny random XLM-R encoder and a tiny model repository, built offline in seconds.

Tests and smoke runs need a real checkpoint (real tokenizer, real ONNX graph, real manifest) but must
never download from a hub; so the tokenizer is trained here on a few hundred multilingual sentences and
the weights are random. The architecture is the same one the real base model uses (XLMRobertaModel), so
the export path exercised by tests is the one used in production.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

# XLM-R's special-token layout (ids 0-3 fixed, <mask> after the vocabulary): kept identical so the
# tiny model takes the same code paths (padding_idx=1, position ids start at 2) as the real one.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK_TOKEN = "<mask>"
VOCAB_SIZE = 2000  # about 700 characters of alphabet plus merges
TINY_MAX_LENGTH = 128  # max_position_embeddings 130 minus XLM-R's padding_idx + 1 offset
TINY_BASE_MODEL = "tiny-random-xlmr"


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """Train the BPE + Metaspace tokenizer once per process; members must share it byte for byte.

    BPE with the full character alphabet (no `limit_alphabet`) is used because it is deterministic across
    processes; the Unigram trainer and a capped alphabet break count ties differently on every run, which
    would change token ids (and sha256s) between test sessions.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from export.onnx_export import multilingual_sentences

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[*SPECIAL_TOKENS, MASK_TOKEN])
    tokenizer.train_from_iterator(multilingual_sentences(per_language=60), trainer=trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tokenizer.to_str()


def _save_tokenizer(out_dir: Path) -> int:
    """Save as a Hugging Face fast tokenizer (AutoTokenizer-loadable); returns the vocabulary size."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tokenizer_json())
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token=MASK_TOKEN,
        model_max_length=TINY_MAX_LENGTH,
    )
    fast.save_pretrained(out_dir)
    return int(backend.get_vocab_size())


def build_tiny_checkpoint(out_dir: Path, seed: int = 0) -> Path:
    """Write a random 2-layer XLMRobertaModel + tokenizer to `out_dir` (an HF checkpoint folder).

    Different seeds give different weights but the identical tokenizer, so a repository made of several
    tiny members exercises the service's shared-tokenisation path.
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = _save_tokenizer(out_dir)
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=TINY_MAX_LENGTH + 2,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = XLMRobertaModel(config)
    model.save_pretrained(out_dir)
    return out_dir


def build_tiny_repository(out_dir: Path, n_members: int = 2) -> Path:
    """Export `n_members` tiny members (seeds 0..n-1, named tiny0, tiny1, ...) and a concat ensemble.

    Member 0 is cut at layer 1 and later ones keep all layers, so the repository also covers layer cutting.
    """
    from export.onnx_export import export_member
    from export.repository_writer import write_ensemble

    out_dir = Path(out_dir)
    names: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xret-tiny-") as scratch:
        for seed in range(n_members):
            name = f"tiny{seed}"
            checkpoint = build_tiny_checkpoint(Path(scratch) / name, seed=seed)
            export_member(
                checkpoint,
                out_dir,
                name,
                layer=1 if seed == 0 else -1,
                max_length=TINY_MAX_LENGTH,
                base_model=TINY_BASE_MODEL,
                training={"seed": seed},
            )
            names.append(name)
    write_ensemble(out_dir, names, method="concat")
    return out_dir
