"""Systems as member subsets of a repository, embedded member by member and fused the service's way.

The study compares dozens of ensembles built from the same few members. Embedding each ensemble as a
whole would re-run every member once per ensemble; instead each member is embedded once, through the
service's own `Engine` over a one-member view of the repository, cached under that view's fingerprint
(which hashes the member's weights, tokenizer, prefix and max length), and the system's vectors are then
fused with `service.ensemble.fuse`, the function the engine's `Ensemble.run` calls on every batch. Fusing
unit vectors again is a no-op on their normalisation, so the result equals the engine's output on the
full repository (tested), at the cost of one embedding pass per member instead of one per ensemble.

A system spec is `NAME=REPO_DIR[:MEMBER[*WEIGHT],...][@FUSION][~center]`: without members it is the repository's own
ensemble (its members, fusion and weights); with members it is that subset with the weights given (1 where
none is) and the repository's fusion method (concat when it has no ensemble.json yet), or FUSION when given.
Weights let a study score a fixed weighting it registered in advance (the base at 4 beside four seeds of one
member at 1 each) without writing a repository per weighting. `score_sum` is exactly `concat` (see
service.ensemble) and is scored that way. Score-level `rrf` is a re-ranking done at search time on the
service's candidate list, not an embedding: an rrf system's vectors are the concatenation the service
stores, and the runner picks its top hit with the service's own re-ranking (rrf.py), never by their cosine.
`~center` scores the system's vectors language-centred (service/centering.py): each one-language side of a
task minus its own mean; the hubness reference, many languages at once, is never centred. It does not go
with rrf, whose member cosines are read back from blocks that centring no longer keeps at unit length.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from benchmarks.retrieval.embed import EngineEmbedder
from benchmarks.retrieval.errors import BenchmarkError
from service.centering import center_by_own_mean
from service.ensemble import fuse
from service.repository import (
    EnsembleSpec,
    FusionSpec,
    RepositoryError,
    load_repository,
    write_json_atomic,
)

FUSIONS = ("concat", "mean", "score_sum", "rrf")
CENTER_SUFFIX = "~center"


@dataclass(frozen=True)
class System:
    """A named system: a repository, optionally narrowed to some members and another fusion method."""

    name: str
    repo: Path
    members: tuple[str, ...] | None = None
    fusion: str | None = None
    weights: tuple[float, ...] | None = None  # with members: one per member; None: uniform
    center: bool = False  # score language-centred vectors (module docstring)

    @classmethod
    def parse(cls, name: str, spec: str) -> System:
        """`REPO_DIR[:m1*w1,m2][@fusion][~center]` -> System; a malformed spec is a BenchmarkError naming it."""
        centred = spec.endswith(CENTER_SUFFIX)
        body = spec.removesuffix(CENTER_SUFFIX) if centred else spec
        rest, at, fusion = body.rpartition("@") if "@" in body else (body, "", "")
        repo, colon, members_raw = rest.partition(":")
        if not repo or (at and not fusion) or (colon and not members_raw.strip(",")):
            raise BenchmarkError(
                f"--system {name}={spec!r}: expected NAME=REPO_DIR[:MEMBER[*WEIGHT],...][@FUSION][{CENTER_SUFFIX}]"
            )
        entries = [m.strip() for m in members_raw.split(",") if m.strip()] if colon else None
        members = tuple(e.partition("*")[0].strip() for e in entries) if entries is not None else None
        if members is not None and len(set(members)) != len(members):
            raise BenchmarkError(f"--system {name}={spec!r}: a member is listed twice")
        weights = _weights(name, spec, entries) if entries is not None and any("*" in e for e in entries) else None
        if fusion and fusion not in FUSIONS:
            raise BenchmarkError(f"--system {name}={spec!r}: fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
        if centred and fusion == "rrf":
            raise BenchmarkError(f"--system {name}={spec!r}: {CENTER_SUFFIX} does not go with rrf (module docstring)")
        return cls(name=name, repo=Path(repo), members=members, fusion=fusion or None, weights=weights, center=centred)


def _weights(name: str, spec: str, entries: list[str]) -> tuple[float, ...]:
    """The `*WEIGHT` of each `MEMBER*WEIGHT` entry (1 where absent); each must be a number > 0."""
    weights = []
    for entry in entries:
        member, star, raw = entry.partition("*")
        try:
            weight = float(raw) if star else 1.0
        except ValueError:
            weight = float("nan")
        if not (weight > 0 and math.isfinite(weight)):
            raise BenchmarkError(
                f"--system {name}={spec!r}: weight of {member.strip()!r} must be a number > 0, got {raw!r}"
            )
        weights.append(weight)
    return tuple(weights)


class SystemEmbedder:
    """Async context manager giving a system's fused vectors; members are embedded and cached one by one."""

    def __init__(self, system: System, cache_dir: Path | None, threads: int = 0) -> None:
        own: EnsembleSpec | None = None
        if system.members is None or (system.repo / "ensemble.json").is_file():
            # a named member subset needs no ensemble.json (a pipeline writes it last, after every member)
            try:
                own = load_repository(system.repo, verify_hashes=False).ensemble
            except RepositoryError as exc:
                raise BenchmarkError(f"system {system.name!r}: {exc}") from None
        names = list(system.members) if system.members is not None else list(own.members if own else [])
        members_dir = system.repo / "members"
        if not members_dir.is_dir():
            raise BenchmarkError(f"system {system.name!r}: {members_dir} is not a folder")
        available = {m.name for m in members_dir.iterdir() if (m / "member.json").is_file()}
        missing = [n for n in names if n not in available]
        if missing:
            raise BenchmarkError(
                f"system {system.name!r}: member(s) {missing} not in {system.repo / 'members'} "
                f"(it has: {', '.join(sorted(available))})"
            )
        self.method = system.fusion or (own.fusion.method if own else "concat")
        self.rrf_k = own.fusion.rrf_k if own else FusionSpec(method="rrf").rrf_k
        same_ensemble = own is not None and (system.members is None or list(system.members) == list(own.members))
        if system.weights is not None:
            self.weights = list(system.weights)
        elif own and same_ensemble:
            self.weights = own.fusion.resolved_weights(len(names))
        else:
            self.weights = [1.0] * len(names)
        self.names = names
        self.center = system.center
        self._views = tempfile.TemporaryDirectory(prefix="xret-bench-views-")
        self.members = [
            EngineEmbedder(_member_view(system.repo, name, Path(self._views.name)), cache_dir, threads)
            for name in names
        ]
        dims = {m.repository.ensemble.dim for m in self.members}
        if self.method == "mean" and len(dims) != 1:
            raise BenchmarkError(f"system {system.name!r}: fusion 'mean' needs members of one dim, got {sorted(dims)}")
        self.dim = sum(m.repository.ensemble.dim for m in self.members) if self.method != "mean" else dims.pop()

    @property
    def dims(self) -> list[int]:
        """Each member's dim, in member order: the blocks of a concat-layout (and rrf) fused row."""
        return [m.repository.ensemble.dim for m in self.members]

    @property
    def fingerprint(self) -> str:
        """Identity of the fused vectors: member fingerprints in order, method and weights."""
        payload = json.dumps([[m.fingerprint for m in self.members], self.method, self.weights])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def texts_embedded(self) -> int:
        return sum(m.texts_embedded for m in self.members)

    @property
    def texts_from_cache(self) -> int:
        return sum(m.texts_from_cache for m in self.members)

    @property
    def embed_seconds(self) -> float:
        return sum(m.embed_seconds for m in self.members)

    async def __aenter__(self) -> SystemEmbedder:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for member in self.members:
            await member.__aexit__(exc_type, exc, tb)
        self._views.cleanup()

    async def embed(self, texts: list[str], desc: str = "embed") -> np.ndarray:
        """Fused unit vectors [len(texts), dim]: each member from its cache or its engine, then `fuse`."""
        vectors = []
        for name, member in zip(self.names, self.members, strict=True):
            vectors.append(await member.embed(texts, desc=f"{desc} {name}"))
        return np.ascontiguousarray(fuse(self.method, vectors, self.weights), dtype=np.float32)


    async def embed_language(self, texts: list[str], desc: str = "embed") -> np.ndarray:
        """`embed` for texts of one language: centred on their own mean when the system is `~center`."""
        vectors = await self.embed(texts, desc)
        if not self.center:
            return vectors
        try:
            return center_by_own_mean(vectors)
        except ValueError as exc:
            raise BenchmarkError(f"{desc}: cannot centre: {exc}") from None


def _member_view(repo: Path, name: str, root: Path) -> Path:
    """A one-member repository under `root` whose member folder links to the original (nothing copied).

    Its ensemble.json is what `export base` writes for a lone member (concat, default weights), so a
    one-member repository and the view of its member share a fingerprint and an embedding cache.
    """
    view = root / name
    (view / "members").mkdir(parents=True)
    os.symlink((repo / "members" / name).resolve(), view / "members" / name, target_is_directory=True)
    member_json = json.loads((repo / "members" / name / "member.json").read_text(encoding="utf-8"))
    spec = EnsembleSpec(members=[name], fusion=FusionSpec(method="concat"), dim=int(member_json["dim"]))
    write_json_atomic(view / "ensemble.json", spec.to_json())
    return view
