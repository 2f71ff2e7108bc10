"""Write `ensemble.json` over already-exported members and prove the service would accept the result."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from pathlib import Path

from service.repository import (
    EnsembleSpec,
    FusionSpec,
    MemberSpec,
    RepositoryError,
    fused_dim,
    load_repository,
    read_json,
    write_json_atomic,
)

# Distributions whose versions decide what an exported graph looks like; recorded so a repository can be
# reproduced (or a parity drift explained) later.
TOOL_DISTRIBUTIONS = ("torch", "transformers", "onnx", "onnxruntime", "xret")


def tool_versions() -> dict[str, str]:
    """Installed versions of the export toolchain ("absent" where a package is not installed)."""
    versions: dict[str, str] = {}
    for dist in TOOL_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def write_ensemble(
    repo: Path,
    members: list[str],
    method: str = "concat",
    weights: list[float] | None = None,
) -> EnsembleSpec:
    """Write `repo/ensemble.json` for `members` (in this order) and validate the whole repository.

    The output dim is computed from the members' own member.json, never passed in, so it cannot disagree
    with the graphs. Validation runs `load_repository` (the service's own start-up check, hashes included):
    if it would refuse to start, the writer raises `RepositoryError` now rather than at deploy time.
    """
    repo = Path(repo)
    if not members:
        raise RepositoryError(f"{repo}: an ensemble needs at least one member")
    specs: list[MemberSpec] = []
    for name in members:
        path = repo / "members" / name / "member.json"
        if not path.is_file():
            raise RepositoryError(f"{path}: file missing (export member {name!r} first)")
        specs.append(MemberSpec.from_json(read_json(path), str(path)))
    fusion = FusionSpec(method=method, weights=list(weights) if weights is not None else None)
    fusion.validate(len(members), str(repo / "ensemble.json"))
    spec = EnsembleSpec(
        members=list(members),
        fusion=fusion,
        dim=fused_dim(method, [s.dim for s in specs]),
        tool_versions=tool_versions(),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    write_json_atomic(repo / "ensemble.json", spec.to_json())
    load_repository(repo)
    return spec
