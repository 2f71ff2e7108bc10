"""Weight-space operations on encoders fine-tuned from one base: WiSE-FT interpolation and model soups.

Both only make sense between models that share every parameter name and shape (same base, same
architecture, same cut layer); anything else is refused with the first differing tensor named, because
averaging misaligned tensors "works" numerically and produces a silently broken encoder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

MODEL_FILE = "model.safetensors"
# What the exporter and AutoTokenizer need; copied byte for byte so the soup's tokenizer sha256 matches.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
)
# config.json keys that describe provenance, not architecture
_CONFIG_PROVENANCE = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


class WeightSpaceError(ValueError):
    """Checkpoints cannot be combined in weight space (different parameters, shapes or tokenizers)."""


def check_compatible(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str]) -> None:
    """Same keys, shapes and dtypes in every state dict; `names` label them in the error."""
    reference = states[0]
    for state, name in zip(states[1:], names[1:], strict=True):
        missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
        if missing or extra:
            raise WeightSpaceError(
                f"{name} and {names[0]} have different parameters (only in {names[0]}: {missing[:3]}, "
                f"only in {name}: {extra[:3]}): not the same architecture"
            )
        for key, tensor in reference.items():
            if state[key].shape != tensor.shape or state[key].dtype != tensor.dtype:
                raise WeightSpaceError(
                    f"{key}: {tuple(state[key].shape)} {state[key].dtype} in {name} but {tuple(tensor.shape)} "
                    f"{tensor.dtype} in {names[0]}: not the same architecture"
                )


def interpolate(
    base: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT: (1 - alpha) * base + alpha * finetuned, tensor by tensor (alpha 0 = base, 1 = fine-tuned)."""
    if not 0.0 <= alpha <= 1.0:
        raise WeightSpaceError(f"alpha must be in [0, 1], got {alpha}")
    return soup_state_dicts([base, finetuned], [1.0 - alpha, alpha], names=["base", "fine-tuned"])


def soup_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts (weights normalised to sum 1; uniform by default).

    Non-float tensors (integer buffers) cannot be averaged; they must be identical and are copied.
    """
    if not states:
        raise WeightSpaceError("nothing to average: no state dicts given")
    labels = list(names) if names is not None else [f"model {i}" for i in range(len(states))]
    coefficients = _normalised(weights, len(states))
    check_compatible(states, labels)
    result: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            for state, label in zip(states[1:], labels[1:], strict=True):
                if not torch.equal(state[key], first):
                    raise WeightSpaceError(f"{key} is not a float tensor and differs between {labels[0]} and {label}")
            result[key] = first.clone()
            continue
        total = torch.zeros_like(first, dtype=torch.float64)
        for state, coefficient in zip(states, coefficients, strict=True):
            total += coefficient * state[key].to(torch.float64)
        result[key] = total.to(first.dtype)
    return result


def soup(checkpoints: Sequence[Path], weights: Sequence[float] | None, out_dir: Path) -> Path:
    """Average HF checkpoint folders fine-tuned from one base into a new checkpoint folder `out_dir`.

    Refused unless the configs agree on architecture and the tokenizer files are identical, since one
    soup member is exported with one tokenizer.
    """
    from safetensors.torch import load_file, save_file

    folders = [Path(c) for c in checkpoints]
    if len(folders) < 2:
        raise WeightSpaceError(f"a soup needs at least 2 checkpoints, got {len(folders)}")
    for folder in folders:
        if not (folder / MODEL_FILE).is_file() or not (folder / "config.json").is_file():
            raise WeightSpaceError(f"{folder}: not a checkpoint folder with config.json and {MODEL_FILE}")
    configs = [_architecture(folder) for folder in folders]
    for folder, config in zip(folders[1:], configs[1:], strict=True):
        if config != configs[0]:
            differing = sorted(k for k in set(config) | set(configs[0]) if config.get(k) != configs[0].get(k))
            raise WeightSpaceError(f"{folder} and {folders[0]} differ in config {differing}: not the same architecture")
    for name in TOKENIZER_FILES:
        contents = {(folder / name).read_bytes() if (folder / name).is_file() else None for folder in folders}
        if len(contents) > 1:
            raise WeightSpaceError(f"{name} differs between the checkpoints: a soup needs one shared tokenizer")
    states = [load_file(str(folder / MODEL_FILE)) for folder in folders]
    averaged = soup_state_dicts(states, weights, names=[str(f) for f in folders])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in averaged.items()}, str(out_dir / MODEL_FILE), metadata={"format": "pt"})
    shutil.copyfile(folders[0] / "config.json", out_dir / "config.json")
    for name in TOKENIZER_FILES:
        if (folders[0] / name).is_file():
            shutil.copyfile(folders[0] / name, out_dir / name)
    return out_dir


def _normalised(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    values = [float(w) for w in weights]
    if len(values) != n:
        raise WeightSpaceError(f"{len(values)} weights for {n} models")
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise WeightSpaceError(f"weights must be non-negative with a positive sum, got {values}")
    total = sum(values)
    return [w / total for w in values]


def _architecture(folder: Path) -> dict[str, object]:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise WeightSpaceError(f"{folder}/config.json is not a JSON object")
    return {k: v for k, v in config.items() if k not in _CONFIG_PROVENANCE}
