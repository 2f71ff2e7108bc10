"""Stub generation from proto/: into any folder, importable as a package, regenerated only when stale."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.grpc.codegen import PROTO_ROOT, STAMP_NAME, CodegenError, ensure_stubs, generate

ROOT = Path(__file__).resolve().parents[2]


def test_stubs_generate_into_a_fresh_folder_and_import_as_a_package(tmp_path: Path) -> None:
    out = tmp_path / "genpkg"
    generate(PROTO_ROOT, out)
    for rel in ("__init__.py", "xret/__init__.py", "xret/v1/xret_pb2.py", "xret/v1/xret_pb2_grpc.py"):
        assert (out / rel).is_file(), rel
    # Relative imports: the grpc module finds its messages without the output folder on sys.path.
    assert "from . import xret_pb2" in (out / "xret/v1/xret_pb2_grpc.py").read_text()
    # A fresh interpreter, so the default descriptor pool has not seen xret.v1 yet.
    code = (
        "from genpkg.xret.v1 import xret_pb2, xret_pb2_grpc\n"
        "svc = xret_pb2.DESCRIPTOR.services_by_name['Retrieval']\n"
        "print(sorted(m.name for m in svc.methods))\n"
        "print(xret_pb2.Embedding(values=[1.0, 2.0]).SerializeToString().hex())\n"
        "print(hasattr(xret_pb2_grpc, 'RetrievalStub'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    methods, packed, has_stub = done.stdout.split("\n")[:3]
    assert methods == "['AddSentences', 'DeleteSentences', 'Embed', 'GetSentence', 'Info', 'Search']"
    assert packed == "0a080000803f00000040"  # field 1, one length-delimited run: packed floats
    assert has_stub == "True"


def test_every_field_and_rpc_has_a_comment() -> None:
    """The .proto comments are the API docs; an undocumented field is a docs bug."""
    lines = (PROTO_ROOT / "xret/v1/xret.proto").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        text = line.strip()
        is_field = text.endswith(";") and "=" in text and not text.startswith(("option", "syntax", "//"))
        if (is_field or text.startswith("rpc ")) and not lines[i - 1].strip().startswith("//"):
            undocumented.append(text)
    assert undocumented == []


def test_ensure_stubs_regenerates_only_when_the_protos_change(tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(PROTO_ROOT, protos)
    out = tmp_path / "gen"
    ensure_stubs(protos, out)
    stub = out / "xret/v1/xret_pb2.pyi"
    stamp = (out / STAMP_NAME).read_text()
    marker = out / "marker"
    marker.touch()

    ensure_stubs(protos, out)  # up to date: the folder is left alone
    assert marker.exists() and (out / STAMP_NAME).read_text() == stamp

    proto = protos / "xret/v1/xret.proto"
    proto.write_text(proto.read_text().replace("message InfoRequest {}", "message InfoRequest {}\nmessage Extra {}"))
    ensure_stubs(protos, out)  # changed: regenerated whole
    assert not marker.exists()
    assert (out / STAMP_NAME).read_text() != stamp
    assert "class Extra(" in stub.read_text()


def test_a_broken_proto_reports_protocs_message_and_keeps_the_old_stubs(tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(PROTO_ROOT, protos)
    out = tmp_path / "gen"
    ensure_stubs(protos, out)
    proto = protos / "xret/v1/xret.proto"
    proto.write_text(proto.read_text().replace("int32 k = 2;", "int32 k = 2"))
    with pytest.raises(CodegenError, match=r"protoc failed .*xret\.proto"):
        ensure_stubs(protos, out)
    assert (out / "xret/v1/xret_pb2.py").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no build leftovers


def test_the_service_imports_stubs_from_the_ignored_gen_folder() -> None:
    stubs = importlib.import_module("service.grpc.stubs")
    assert Path(stubs.xret_pb2.__file__).is_relative_to(ROOT / "service/grpc/_gen")
    assert "service/grpc/_gen/" in (ROOT / ".gitignore").read_text().splitlines()
