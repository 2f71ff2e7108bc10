"""Execution providers and precisions side by side: one member on CPU and CUDA, fp32 and fp16.

Why: the service runs members on CUDA when onnxruntime-gpu offers it and can serve an fp16 copy of a
member (`python -m export quantize --mode fp16`); both change what a user gets. Each configuration
`MEMBER@DEVICE` runs through the service's own encoder (`OnnxEncoder`: same session options, padding
and provider checks) and reports:
- the provider that really ran (onnxruntime falls back to the CPU when CUDA libraries are missing);
- the cosine of its embeddings to the first configuration's (the reference) on real sentences;
- sentences/s of a loop over length-sorted batches of each size (batch 1 gives per-call latency);
- with `--tatoeba`, Tatoeba P@1 over an XTREME language set, to put a number on what fp16 costs.

`python -m benchmarks.load.devices --repo artifacts/repo --config e5-small@cpu --config e5-small@cuda
--config e5-small-fp16@cuda --tatoeba --out results/devices` writes devices.json and devices.png.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.load.texts import load_sentences
from benchmarks.retrieval import tatoeba
from benchmarks.retrieval.errors import BenchmarkError
from service import repository
from service.encoders.onnx import DEFAULT_DISABLED_OPTIMIZERS, OnnxEncoder
from service.ensemble import embed_texts
from service.errors import StartupError
from service.repository import Member, RepositoryError

DEVICES = ("cpu", "cuda")
DEFAULT_BATCH_SIZES = (1, 32, 256)
PARITY_TEXTS = 512


@dataclass(frozen=True)
class Config:
    """One member of a repository on one device, written MEMBER@DEVICE."""

    member: str
    device: str

    @classmethod
    def parse(cls, text: str) -> Config:
        member, sep, device = text.rpartition("@")
        if not sep or not member or device not in DEVICES:
            raise argparse.ArgumentTypeError(f"config {text!r} must be MEMBER@DEVICE with DEVICE in {DEVICES}")
        return cls(member, device)

    @property
    def label(self) -> str:
        return f"{self.member}@{self.device}"


def load_member(repo: Path, name: str) -> Member:
    """Any member folder of `repo`, served or not (an fp16 copy is usually not in ensemble.json)."""
    try:
        return repository.load_member(repo, name)
    except RepositoryError as exc:
        raise SystemExit(str(exc)) from None


def throughput(encoder: OnnxEncoder, texts: list[str], batch_size: int, seconds: float) -> dict[str, float]:
    """Sentences/s and mean ms per call over sorted batches, stopping after `seconds` (one batch of warm-up).

    Batches are cut from the length-sorted texts but run in a seeded random order, so a run cut short by
    the time bound still sees short and long batches alike (in sorted order batch 1 would only ever
    measure the shortest sentences)."""
    ids = sorted(encoder.tokenizer.encode(texts), key=len)
    cut = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    batches = [cut[i] for i in np.random.default_rng(0).permutation(len(cut))]
    encoder.forward(batches[0])
    done, calls, start = 0, 0, time.perf_counter()
    for batch in batches:
        encoder.forward(batch)
        done, calls = done + len(batch), calls + 1
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    return {"sentences_per_s": round(done / elapsed, 1), "ms_per_call": round(1e3 * elapsed / calls, 3)}


def tatoeba_scores(
    encoder: OnnxEncoder, data_dir: Path, language_set: str, batch_size: int, only: list[str] | None = None
) -> dict[str, Any]:
    """Mean and per-language P@1 (percent) in both directions over `language_set` (or `only` those)."""
    languages = tatoeba.select_languages(tatoeba.read_languages(data_dir), language_set, only)
    per_language: dict[str, dict[str, float]] = {}
    for language in tqdm(languages, desc=f"tatoeba {encoder.name}", leave=False):
        pair = tatoeba.load_pair(data_dir, language)
        xx_hits, en_hits = tatoeba.evaluate(
            embed_texts(encoder, pair.xx, batch_size), embed_texts(encoder, pair.en, batch_size), pair.gold
        )
        per_language[language.iso3] = {"xx_en": 100 * float(xx_hits.mean()), "en_xx": 100 * float(en_hits.mean())}
    return {
        "language_set": language_set,
        "xx_en": round(float(np.mean([v["xx_en"] for v in per_language.values()])), 2),
        "en_xx": round(float(np.mean([v["en_xx"] for v in per_language.values()])), 2),
        "per_language": per_language,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every configuration in turn; the first one's embeddings are the parity reference."""
    texts = [text for _, text in load_sentences(args.data_dir / "tatoeba" / "v1", limit=args.sentences)]
    parity_texts = texts[:PARITY_TEXTS]
    reference: np.ndarray | None = None
    results = []
    for config in args.config:
        member = load_member(args.repo, config.member)
        encoder = OnnxEncoder(
            member,
            device=config.device,  # type: ignore[arg-type]
            intra_op_threads=args.threads,
            bucketing="none",
            disabled_optimizers=tuple(args.disabled_optimizers),
        )
        encoder.warmup()
        vectors = embed_texts(encoder, parity_texts, 32)  # unit vectors, so a row-wise dot product is the cosine
        if reference is None:
            reference = vectors
        cosine = (vectors * reference).sum(1)
        row: dict[str, Any] = {
            "config": config.label,
            "provider": encoder.describe()["provider"],
            "quantization": member.spec.quantization.get("mode", "fp32"),
            "model_mb": round(member.onnx_path.stat().st_size / 1e6, 1),
            "cosine_to_reference": {"min": round(float(cosine.min()), 6), "mean": round(float(cosine.mean()), 6)},
            "throughput": {
                str(size): throughput(encoder, texts, size, args.seconds)
                for size in tqdm(args.batch_sizes, desc=f"throughput {config.label}", leave=False)
            },
        }
        if args.tatoeba and config.label not in args.tatoeba_except:
            row["tatoeba"] = tatoeba_scores(
                encoder, args.data_dir, args.language_set, args.tatoeba_batch, args.languages
            )
        print(summary_line(row), flush=True)
        results.append(row)
    return {
        "reference": args.config[0].label,
        "sentences": len(texts),
        "disabled_optimizers": list(args.disabled_optimizers),
        "configs": results,
    }


def summary_line(row: dict[str, Any]) -> str:
    speeds = ", ".join(f"b{size} {t['sentences_per_s']}/s" for size, t in row["throughput"].items())
    cosine = row["cosine_to_reference"]["min"]
    line = f"{row['config']} ({row['provider']}, {row['quantization']}): cos min {cosine}; {speeds}"
    if "tatoeba" in row:
        line += f"; tatoeba {row['tatoeba']['xx_en']} / {row['tatoeba']['en_xx']}"
    return line


def plot(report: dict[str, Any], out: Path) -> None:
    """Grouped bars: sentences/s per configuration, one group per batch size (log scale: CPU vs GPU)."""
    from benchmarks.load.plot import save_grouped_bars

    configs = report["configs"]
    sizes = list(configs[0]["throughput"])
    series = {row["config"]: [row["throughput"][s]["sentences_per_s"] for s in sizes] for row in configs}
    title = "One member per device and precision (bare encoder loop)"
    save_grouped_bars([f"batch {s}" for s in sizes], series, out, ylabel="sentences/s", title=title, log=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load.devices", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path("artifacts/repo"))
    parser.add_argument("--config", type=Config.parse, action="append", required=True, help="MEMBER@DEVICE, repeatable")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sentences", type=int, default=4000, help="mixed-language Tatoeba texts for speed")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(DEFAULT_BATCH_SIZES)
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time bound per batch size")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    parser.add_argument(
        "--disabled-optimizers",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(DEFAULT_DISABLED_OPTIMIZERS),
        help="onnxruntime optimizers to skip, comma-separated (the service's default; empty enables all)",
    )
    parser.add_argument("--tatoeba", action="store_true", help="also score Tatoeba P@1 per configuration")
    parser.add_argument(
        "--tatoeba-except", action="append", default=[], metavar="MEMBER@DEVICE", help="skip its Tatoeba"
    )
    parser.add_argument("--language-set", default="xtreme36")
    parser.add_argument("--languages", type=lambda s: s.split(","), help="only these iso3 codes (quick runs)")
    parser.add_argument("--tatoeba-batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("results/devices"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (StartupError, BenchmarkError) as exc:  # e.g. @cuda without CUDA, an unknown language: no traceback
        print(f"error: {exc}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "devices.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "devices.png")
    print(f"wrote {args.out / 'devices.json'} and {args.out / 'devices.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
