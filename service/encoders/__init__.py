"""Encoders: the staged interface, the ONNX Runtime backend and a fake for tests.

`load_encoders` builds one `Tokenizer` per distinct tokenizer key and hands the same object to every
member that shares it; the ensemble groups members by `encoder.tokenizer.key` and tokenizes once
per group.
"""

from __future__ import annotations

from service.encoders.base import Encoder, Tokenizer, tokenizer_key
from service.encoders.onnx import DEFAULT_DISABLED_OPTIMIZERS, Bucketing, Device, OnnxEncoder
from service.encoders.packing import DEFAULT_PACK_TOKENS
from service.repository import Repository

__all__ = ["Encoder", "OnnxEncoder", "Tokenizer", "load_encoders"]


def load_encoders(
    repo: Repository,
    device: Device = "auto",
    threads: int = 0,
    spinning: bool = False,
    padding_slack: float = 0.25,
    bucketing: Bucketing = "cost",
    disabled_optimizers: tuple[str, ...] = DEFAULT_DISABLED_OPTIMIZERS,
    pack_tokens: int = DEFAULT_PACK_TOKENS,
) -> list[Encoder]:
    """Every member of `repo` as an ONNX encoder, in ensemble order, tokenizers shared by key."""
    shared: dict[str, Tokenizer] = {}
    encoders: list[Encoder] = []
    for member in repo.members:
        spec = member.spec
        key = tokenizer_key(spec.tokenizer_sha256, spec.text_prefix, spec.max_length)
        if key not in shared:
            shared[key] = Tokenizer(member.tokenizer_path, spec.text_prefix, spec.max_length, spec.tokenizer_sha256)
        tokenizer = shared[key]
        encoders.append(
            OnnxEncoder(
                member,
                device=device,
                intra_op_threads=threads,
                tokenizer=tokenizer,
                spinning=spinning,
                padding_slack=padding_slack,
                bucketing=bucketing,
                disabled_optimizers=disabled_optimizers,
                pack_tokens=pack_tokens,
            )
        )
    return encoders
