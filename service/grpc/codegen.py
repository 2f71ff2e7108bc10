"""Generate the Python gRPC stubs from proto/ (they are build output, never committed).

Stubs are generated with grpc_tools' bundled protoc, so the generated code always matches the
installed grpcio/protobuf runtime instead of whatever version someone last committed. protoc writes
absolute imports (``from xret.v1 import xret_pb2``) that only resolve with the output folder on
sys.path; we rewrite them to relative imports so the stubs work as an ordinary subpackage
(``service.grpc._gen.xret.v1``) in any folder, with no sys.path changes.

Freshness is decided by a stamp holding a hash of the .proto files and the grpc_tools version, not by
mtimes, which git checkouts and copies do not preserve.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata, resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
GEN_DIR = Path(__file__).resolve().parent / "_gen"
STAMP_NAME = "STAMP.json"
_IMPORT_RE = re.compile(r"^from ((?:\w+\.)*\w+) import (\w+)", re.MULTILINE)


class CodegenError(RuntimeError):
    """Stubs could not be generated; the message carries protoc's own complaint."""


def proto_files(proto_root: Path) -> list[Path]:
    """All .proto files under the root, sorted so the stamp hash is deterministic."""
    files = sorted(proto_root.rglob("*.proto"))
    if not files:
        raise CodegenError(f"no .proto files under {proto_root}; the proto/ folder ships with the source tree")
    return files


def _stamp(proto_root: Path) -> dict[str, str]:
    digest = hashlib.sha256()
    for path in proto_files(proto_root):
        digest.update(path.relative_to(proto_root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return {"protos_sha256": digest.hexdigest(), "grpcio_tools": metadata.version("grpcio-tools")}


def _read_stamp(out_dir: Path) -> dict[str, str] | None:
    try:
        loaded = json.loads((out_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _relativize_imports(source: Path, root: Path, generated: set[str]) -> None:
    """Turn ``from xret.v1 import xret_pb2`` into ``from . import xret_pb2`` (for our own modules only)."""
    own_package = source.parent.relative_to(root).parts

    def rewrite(match: re.Match[str]) -> str:
        package, name = match.group(1), match.group(2)
        if f"{package}.{name}" not in generated:
            return match.group(0)  # google.protobuf, grpc, ...: real top-level packages
        target = package.split(".")
        common = 0
        while common < min(len(target), len(own_package)) and target[common] == own_package[common]:
            common += 1
        dots = "." * (len(own_package) - common + 1)
        return f"from {dots}{'.'.join(target[common:])} import {name}"

    text = source.read_text(encoding="utf-8")
    source.write_text(_IMPORT_RE.sub(rewrite, text), encoding="utf-8")


def generate(proto_root: Path, out_dir: Path) -> None:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto into out_dir (replaced whole)."""
    protos = proto_files(proto_root)
    well_known = resources.files("grpc_tools") / "_proto"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={proto_root}",
            f"--proto_path={well_known}",
            f"--python_out={build}",
            f"--pyi_out={build}",
            f"--grpc_python_out={build}",
            *(str(p.relative_to(proto_root)) for p in protos),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise CodegenError(f"protoc failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        modules = {".".join(p.relative_to(build).with_suffix("").parts) for p in build.rglob("*.py")}
        for source in [*build.rglob("*.py"), *build.rglob("*.pyi")]:
            _relativize_imports(source, build, modules)
        for folder in [build, *(d for d in build.rglob("*") if d.is_dir())]:
            (folder / "__init__.py").touch()
        (build / STAMP_NAME).write_text(json.dumps(_stamp(proto_root), indent=2) + "\n", encoding="utf-8")
        _swap_in(build, out_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _swap_in(build: Path, out_dir: Path) -> None:
    """Replace out_dir by build with renames, so importers never see a half-written package."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    build.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise generation across processes (parallel test workers, several servers on one checkout)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ensure_stubs(proto_root: Path = PROTO_ROOT, out_dir: Path = GEN_DIR) -> None:
    """Generate the stubs unless out_dir already holds stubs of exactly these protos and this protoc."""
    wanted = _stamp(proto_root)
    if _read_stamp(out_dir) == wanted:
        return
    with _locked(out_dir.parent):
        if _read_stamp(out_dir) != wanted:  # another process may have generated them meanwhile
            generate(proto_root, out_dir)


if __name__ == "__main__":
    ensure_stubs()
    print(f"gRPC stubs up to date in {GEN_DIR}")
