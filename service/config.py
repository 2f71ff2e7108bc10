"""One typed settings object for the service.

Every option is an environment variable (``XRET_<NAME>``; ``REDIS_URL`` keeps its conventional
name) and a CLI flag of ``python -m service serve`` (``--name-with-dashes``); the description here
is the one operators read in ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.encoders.packing import DEFAULT_PACK_TOKENS


class Settings(BaseSettings):
    """Service settings; defaults are sized for a 2-core CPU machine."""

    model_config = SettingsConfigDict(env_prefix="XRET_", extra="ignore")

    repo: Path = Field(Path("artifacts/repo"), description="Model repository folder (ensemble.json, members/).")
    index: Path = Field(Path("artifacts/index"), description="Index folder; created empty when absent.")
    host: str = Field("127.0.0.1", description="Address the REST and gRPC servers bind to.")
    port: int = Field(8000, ge=0, le=65535, description="REST (HTTP) port; 0 picks a free one.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "XRET_REDIS_URL", "redis_url"),
        description="Redis URL for the shared cache; unset means an in-process LRU cache.",
    )
    api_key: str | None = Field(None, description="When set, index-changing calls need this key.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto uses CUDA when onnxruntime offers it, else CPU."
    )
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per member session; 0 = runtime default.")
    ort_spinning: bool | None = Field(
        None,
        description=(
            "Let idle onnxruntime threads spin-wait for work (intra- and inter-op). Unset: on when the repository "
            "has one member, off with several (their thread pools run at once and spin against each other: "
            "0.78-0.86x with two members). With one member on 2 cores spinning served 1.07x the texts/s at 32 "
            "one-text clients and 1.10x at 4 clients of 32 texts (stop 15, interleaved rounds); stop 6 had turned "
            "it off when, before length buckets, spinning threads starved the event loop."
        ),
    )
    batcher_concurrency: int | None = Field(
        None,
        ge=1,
        description=(
            "Encoder batches that may run at once (one thread each); unset: 1 on CPU, 2 on CUDA. 1 lets "
            "waiting texts form the next, larger batch; on a GPU a second batch hides the host's work "
            "(tokens, padding, copies) behind the device's."
        ),
    )
    bucketing: Literal["cost", "slack", "none"] = Field(
        "cost",
        description=(
            "How an encoder batch is cut into session calls of similar length: cost = the split with the least "
            "predicted run time, from each member's call cost measured at start-up; slack = groups whose padded "
            "tokens stay within (1 + padding_slack) x their real tokens (8 rows or more); none = one call."
        ),
    )
    padding_slack: float = Field(
        0.25, ge=0, description="bucketing=slack: padded tokens allowed per real token, minus one."
    )
    pack_tokens: int = Field(
        DEFAULT_PACK_TOKENS,
        ge=0,
        description=(
            "Members exported with --packed (a model.packed.onnx beside model.onnx): tokens per row, each row "
            "holding several texts kept apart by the graph; a longer text gets a row of its own. Rows are cut into "
            "calls as `bucketing` says. 0 runs model.onnx, the padded graph, instead."
        ),
    )
    ort_disabled_optimizers: str = Field(
        "SkipLayerNormFusion",
        description=(
            "onnxruntime graph optimizers to skip, comma-separated; empty enables all. The fused "
            "SkipLayerNormalization ran slower than LayerNormalization + Add on a 2-core Xeon."
        ),
    )
    max_batch_tokens: int | None = Field(
        None, ge=64, description="Token budget (padded tokens) of one encoder batch; unset: 8192 on CPU, 32768 on CUDA."
    )
    max_batch_size: int | None = Field(
        None, ge=1, description="Most texts in one encoder batch; unset: 64 on CPU, 256 on CUDA."
    )
    max_wait_ms: float = Field(2.0, ge=0, description="How long a batch waits for more texts before it runs.")
    queue_size: int = Field(2048, ge=1, description="Most texts waiting to be encoded; beyond it requests get 429.")
    max_texts_per_request: int = Field(256, ge=1, description="Most texts (queries or sentences) in one request.")
    max_chars_per_text: int = Field(2000, ge=1, description="Longest text accepted, in characters.")
    max_k: int = Field(100, ge=1, description="Largest k a search may ask for.")
    search_max_wait_ms: float = Field(
        1.0,
        ge=0,
        description=(
            "How long an index search waits for concurrent searches with the same k, languages, fusion and rescore, "
            "so one index scan serves them all."
        ),
    )
    search_concurrency: int = Field(
        2, ge=1, description="Index searches that may run at once; while they run, new queries wait and share the next."
    )
    search_rescore: Literal["none", "margin", "csls"] = Field(
        "none",
        description=(
            "Hubness rescoring for searches that do not ask for one: none (plain cosine), margin (ratio margin) "
            "or csls. Re-ranks the top max(10k, 100) cosine candidates by each sentence's neighbourhood density "
            "(service/hubness.py); needs a fusion scored by cosine (not rrf). Choose it on a dev set."
        ),
    )
    neighbourhood_stats: bool = Field(
        False,
        description=(
            "Keep each sentence's neighbourhood density so searches may ask for rescore margin/csls (on by itself "
            "when search_rescore is set). Costs a k-NN search per added sentence and an O(n^2) pass per snapshot."
        ),
    )
    hubness_reference: Path | None = Field(
        None,
        description=(
            "A file of sentences in many languages, one per line (`python -m export reference`), standing in for "
            "future queries: each sentence's neighbourhood density for rescoring is measured against it instead "
            "of against the other indexed sentences (turns neighbourhood statistics on). Embedded at start-up "
            "(10,000 sentences: ~35 s per member on 2 CPU cores). Draw it from the queries' own kind of text: "
            "a reference of STS-B sentences gained 1.9 P@1 on STS-B-like queries and nothing on Tatoeba "
            "(benchmarks/RESULTS.md, stop 15)."
        ),
    )
    cache_size: int = Field(10000, ge=0, description="Entries kept by the cache (LRU bound; Redis: per-key TTL).")
    cache_ttl_s: int = Field(3600, ge=1, description="Lifetime of a cached entry in Redis, seconds.")
    index_kind: Literal["flat", "ivf", "hnsw"] = Field("flat", description="FAISS index type for a new index.")
    ivf_nlist: int = Field(256, ge=1, description="IVF: number of clusters.")
    ivf_nprobe: int = Field(16, ge=1, description="IVF: clusters searched per query.")
    hnsw_m: int = Field(32, ge=2, description="HNSW: links per node.")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW: search breadth.")
    snapshot_interval_s: float = Field(
        300.0, ge=0, description="Compact the index write-ahead log into a snapshot this often; 0 = only at stop."
    )
    data_dir: Path = Field(Path("../shared/data"), description="Shared data folder (Tatoeba, ...).")

    @property
    def disabled_optimizers(self) -> tuple[str, ...]:
        """`ort_disabled_optimizers` as names (the setting is one string so a flag and an env var can set it)."""
        return tuple(name.strip() for name in self.ort_disabled_optimizers.split(",") if name.strip())


@dataclass(frozen=True)
class Batching:
    """The micro-batcher's limits once the device is known (see `resolve_batching`)."""

    max_batch_tokens: int
    max_batch_size: int
    concurrency: int


# Measured with `python -m benchmarks.load.cli run` against `python -m service serve` (PERFORMANCE.md, stop 11):
# on 2 CPU cores a batch of 64 already fills the machine and a second concurrent batch only competes for it;
# on an H200 the CPU values left the GPU idle between small batches, and 256 texts with two batches in flight
# served 1.5-1.6x the texts/s at 16-64 clients of 32 texts, with a lower p99.
CPU_BATCHING = Batching(max_batch_tokens=8192, max_batch_size=64, concurrency=1)
CUDA_BATCHING = Batching(max_batch_tokens=32768, max_batch_size=256, concurrency=2)


def resolve_spinning(settings: Settings, members: int) -> bool:
    """`ort_spinning` as set, or unset: on for a one-member repository, off when several members run at once."""
    return settings.ort_spinning if settings.ort_spinning is not None else members == 1


def resolve_batching(settings: Settings, on_cuda: bool) -> Batching:
    """Each limit the settings leave unset takes the default of the device the members run on."""
    base = CUDA_BATCHING if on_cuda else CPU_BATCHING
    return Batching(
        max_batch_tokens=base.max_batch_tokens if settings.max_batch_tokens is None else settings.max_batch_tokens,
        max_batch_size=base.max_batch_size if settings.max_batch_size is None else settings.max_batch_size,
        concurrency=base.concurrency if settings.batcher_concurrency is None else settings.batcher_concurrency,
    )
