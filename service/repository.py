"""The model repository: the only thing that crosses from offline `export/` to the online service.

A repository is a folder::

    ensemble.json                      members (in order), fusion, output dim, tool versions
    members/<name>/model.onnx          input_ids, attention_mask -> sentence_embedding [batch, dim]
    members/<name>/model.packed.onnx   optional: the same weights taking several texts per row
                                       (service/encoders/packing.py), recorded as packed_onnx_sha256
    members/<name>/tokenizer.json      Hugging Face fast tokenizer
    members/<name>/member.json         how the member was made and how to feed it

This module is a leaf: it imports nothing of ours but `errors`, so both `export/` (writer) and
`service/` (reader) share one schema and cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.errors import StartupError

SCHEMA_VERSION = 1
FUSION_METHODS = ("concat", "mean", "rrf", "score_sum")
PACKED_ONNX = "model.packed.onnx"


class RepositoryError(StartupError):
    """The repository on disk is not servable; the message says which file and why."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so large ONNX graphs do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so a reader never sees a half-written manifest (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class MemberSpec:
    """What `member.json` says about one encoder: enough to feed it and to trust it."""

    name: str
    base_model: str
    dim: int
    onnx_sha256: str
    tokenizer_sha256: str
    tasks: list[str] = field(default_factory=list)
    layer: int = -1
    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 512
    text_prefix: str = ""
    parity_max_abs_diff: float | None = None
    training: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    # set only on members made by `python -m export quantize`: mode, source member and its sha256, parity
    quantization: dict[str, Any] = field(default_factory=dict)
    # fused node counts written at export (export/graph_fusion.py), e.g. {"BiasGelu": 12}
    graph_fusions: dict[str, int] = field(default_factory=dict)
    # set when the member also has model.packed.onnx: several texts per row -> [rows, texts per row, dim]
    # (service/encoders/packing.py); the service runs it instead of model.onnx when it packs
    packed_onnx_sha256: str | None = None
    packed_parity_max_abs_diff: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any], where: str) -> MemberSpec:
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("name", "base_model", "dim", "onnx_sha256", "tokenizer_sha256") if k not in payload]
        if missing:
            raise RepositoryError(f"{where}: missing field(s) {', '.join(missing)}")
        payload = dict(payload)
        legacy = payload.pop("graph_inputs", "padded")  # stop 12's field: model.onnx itself was the packed graph
        if legacy != "padded":
            raise RepositoryError(
                f"{where}: graph_inputs {legacy!r}: model.onnx is a packed graph, which this version no longer "
                "serves as model.onnx; re-export the member (export member --packed writes model.packed.onnx beside "
                "the padded model.onnx)"
            )
        unknown = sorted(set(payload) - known)
        if unknown:
            raise RepositoryError(f"{where}: unknown field(s) {', '.join(unknown)}")
        spec = cls(**payload)
        if not isinstance(spec.dim, int) or spec.dim <= 0:
            raise RepositoryError(f"{where}: dim must be a positive integer, got {spec.dim!r}")
        if spec.pooling != "mean":
            raise RepositoryError(f"{where}: unsupported pooling {spec.pooling!r} (only 'mean')")
        if spec.packed_onnx_sha256 is not None and not isinstance(spec.packed_onnx_sha256, str):
            raise RepositoryError(f"{where}: packed_onnx_sha256 must be a hex string or null")
        return spec


@dataclass
class FusionSpec:
    """How member embeddings become one answer; weights are per member, in member order."""

    method: str = "concat"
    weights: list[float] | None = None
    rrf_k: int = 60

    def validate(self, n_members: int, where: str) -> None:
        if self.method not in FUSION_METHODS:
            raise RepositoryError(f"{where}: fusion method {self.method!r} not in {FUSION_METHODS}")
        if self.weights is not None:
            if len(self.weights) != n_members:
                raise RepositoryError(f"{where}: {len(self.weights)} fusion weights for {n_members} members")
            numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in self.weights)
            if not numbers or not all(math.isfinite(w) and w >= 0 for w in self.weights) or max(self.weights) <= 0:
                raise RepositoryError(f"{where}: fusion weights must be finite, non-negative and not all zero")

    def resolved_weights(self, n_members: int) -> list[float]:
        return list(self.weights) if self.weights is not None else [1.0] * n_members


@dataclass
class EnsembleSpec:
    """`ensemble.json`: member order fixes the layout of concatenated embeddings."""

    members: list[str]
    fusion: FusionSpec
    dim: int
    schema_version: int = SCHEMA_VERSION
    tool_versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any], where: str) -> EnsembleSpec:
        if payload.get("schema_version") != SCHEMA_VERSION:
            raise RepositoryError(
                f"{where}: schema_version {payload.get('schema_version')!r}, this service reads {SCHEMA_VERSION}"
            )
        members = payload.get("members")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise RepositoryError(f"{where}: 'members' must be a non-empty list of member names")
        if len(set(members)) != len(members):
            raise RepositoryError(f"{where}: duplicate member names in {members}")
        fusion_raw = payload.get("fusion") or {}
        if not isinstance(fusion_raw, dict):
            raise RepositoryError(f"{where}: 'fusion' must be an object")
        try:
            fusion = FusionSpec(**fusion_raw)
        except TypeError as exc:
            raise RepositoryError(f"{where}: bad 'fusion': {exc}") from None
        fusion.validate(len(members), where)
        dim = payload.get("dim")
        if not isinstance(dim, int) or dim <= 0:
            raise RepositoryError(f"{where}: 'dim' must be a positive integer")
        return cls(
            members=members,
            fusion=fusion,
            dim=dim,
            tool_versions=dict(payload.get("tool_versions") or {}),
            created_at=str(payload.get("created_at") or ""),
        )


def fused_dim(method: str, member_dims: list[int]) -> int:
    """Output dim of a fusion method: concat stacks members, the others keep one member's dim."""
    if method == "concat":
        return sum(member_dims)
    return member_dims[0]


@dataclass
class Member:
    """A validated member on disk."""

    spec: MemberSpec
    directory: Path

    @property
    def onnx_path(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def packed_onnx_path(self) -> Path | None:
        """The packed twin of model.onnx, when the member was exported with one."""
        return self.directory / PACKED_ONNX if self.spec.packed_onnx_sha256 else None

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"


@dataclass
class Repository:
    """A validated repository; `fingerprint` identifies exactly these weights and this fusion."""

    root: Path
    ensemble: EnsembleSpec
    members: list[Member]
    fingerprint: str


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a manifest file, or a RepositoryError naming the file and the problem."""
    if not path.is_file():
        raise RepositoryError(f"{path}: file missing")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise RepositoryError(f"{path}: expected a JSON object")
    return payload


def load_repository(root: str | Path, verify_hashes: bool = True) -> Repository:
    """Read and validate a repository; every problem is a `RepositoryError` naming the file.

    Hash checks are on by default because a silently swapped model.onnx would make the index
    (built with the old weights) return nonsense without any error.
    """
    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"{root}: model repository folder does not exist")
    ensemble_path = root / "ensemble.json"
    ensemble = EnsembleSpec.from_json(read_json(ensemble_path), str(ensemble_path))
    members: list[Member] = []
    for name in ensemble.members:
        member = load_member(root, name, verify_hashes)
        if member.spec.name != name:
            path = member.directory / "member.json"
            raise RepositoryError(f"{path}: name {member.spec.name!r} but ensemble.json lists {name!r}")
        members.append(member)
    dims = [m.spec.dim for m in members]
    method = ensemble.fusion.method
    if method == "mean" and len(set(dims)) != 1:
        raise RepositoryError(f"{ensemble_path}: fusion 'mean' needs members of one dim, got {dims}")
    expected_dim = fused_dim(method, dims)
    if ensemble.dim != expected_dim:
        raise RepositoryError(
            f"{ensemble_path}: dim {ensemble.dim} but fusion {method!r} of member dims {dims} gives {expected_dim}"
        )
    return Repository(root=root, ensemble=ensemble, members=members, fingerprint=fingerprint_of(ensemble, members))


def load_member(root: str | Path, name: str, verify_hashes: bool = True) -> Member:
    """Any member folder of a repository, listed in ensemble.json or not (a quantised copy usually is not),
    with its files present and matching their recorded sha256."""
    directory = Path(root) / "members" / name
    member_path = directory / "member.json"
    if not member_path.is_file():
        known = sorted(p.parent.name for p in (Path(root) / "members").glob("*/member.json"))
        raise RepositoryError(
            f"{member_path}: file missing: no member {name!r} in {root} (members: {', '.join(known) or 'none'})"
        )
    spec = MemberSpec.from_json(read_json(member_path), str(member_path))
    member = Member(spec=spec, directory=directory)
    files = [(member.onnx_path, spec.onnx_sha256), (member.tokenizer_path, spec.tokenizer_sha256)]
    if member.packed_onnx_path is not None and spec.packed_onnx_sha256:
        files.append((member.packed_onnx_path, spec.packed_onnx_sha256))
    for path, expected in files:
        if not path.is_file():
            raise RepositoryError(f"{path}: file missing")
        if verify_hashes and sha256_file(path) != expected:
            raise RepositoryError(f"{path}: sha256 does not match member.json (file changed after export?)")
    return member


def fingerprint_of(ensemble: EnsembleSpec, members: list[Member]) -> str:
    """Hash of what decides the vectors: member weights, tokenizers, prefixes, layers and fusion."""
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(ensemble.fusion), sort_keys=True).encode())
    for m in members:
        s = m.spec
        digest.update(
            json.dumps(
                [s.name, s.onnx_sha256, s.tokenizer_sha256, s.text_prefix, s.max_length, s.normalize, s.dim],
                sort_keys=True,
            ).encode()
        )
    return digest.hexdigest()[:16]
