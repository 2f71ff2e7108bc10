"""The architecture's dependency rules, checked by reading imports (cheap and hard to dodge)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY_HOMES = {
    "fastapi": "service/rest/",
    "grpc": "service/grpc/",
    "grpc_health": "service/grpc/",
    "grpc_reflection": "service/grpc/",
    "onnxruntime": "service/encoders/",
    "faiss": "service/index",
    "redis": "service/cache.py",
}
NEVER_IN_SERVICE = ("torch", "transformers", "export", "optimum", "safetensors")


def imports_of(path: Path) -> set[str]:
    """Top-level module names a file imports (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def service_files() -> list[Path]:
    return [p for p in (ROOT / "service").rglob("*.py") if "_gen" not in p.parts]


def test_service_never_imports_offline_code() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(imports_of(p) & set(NEVER_IN_SERVICE)) for p in service_files()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_heavy_libraries_live_in_one_place() -> None:
    wrong = []
    for path in service_files():
        rel = str(path.relative_to(ROOT))
        for lib in imports_of(path) & set(HEAVY_HOMES):
            if not rel.startswith(HEAVY_HOMES[lib]) and rel != "service/server.py":
                wrong.append(f"{rel} imports {lib}")
    assert wrong == []


def test_front_ends_do_not_import_each_other() -> None:
    for front, other in (("rest", "service.grpc"), ("grpc", "service.rest")):
        for path in (ROOT / "service" / front).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert f"from {other}" not in text and f"import {other}" not in text, path


def test_repository_contract_is_a_leaf() -> None:
    ours = {"service", "export", "benchmarks"}
    path = ROOT / "service" / "repository.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in modules if m.split(".")[0] in ours} <= {"service.errors"}
