"""No Docker engine runs here, so check what can be checked: the image runs the README's commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from service.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_block(tag: str) -> str:
    match = re.search(rf"<!-- {tag} -->\n```\n(.*?)\n```\n<!-- /{tag} -->", README, re.S)
    assert match, f"README has no {tag} block"
    return match.group(1)


def test_copied_paths_exist() -> None:
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for src in shlex.split(line)[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_build_stage_uses_the_readme_install() -> None:
    demo = readme_block("demo-command")
    install = re.search(r"pip install -q -e '(\.\[[^\]]+\])'", demo)
    assert install, "README demo command has no editable install"
    assert f"pip install -q -e '{install.group(1)}'" in DOCKERFILE


def test_runtime_installs_serve_and_gpu_variant_swaps_onnxruntime() -> None:
    assert "ENV XRET_SERVE_EXTRA=serve\n" in DOCKERFILE
    assert "ENV XRET_SERVE_EXTRA=serve,gpu" in DOCKERFILE
    assert "ARG VARIANT=cpu" in DOCKERFILE and "FROM runtime-${VARIANT}" in DOCKERFILE
    assert "onnxruntime-gpu" in DOCKERFILE


def test_start_command_is_accepted_by_the_cli() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M)
    assert cmd
    argv = __import__("json").loads(cmd.group(1))
    assert argv[1:4] == ["-m", "service", "serve"]
    args = build_parser().parse_args(argv[3:])
    assert str(args.repo) == "/models/repo" and args.host == "0.0.0.0"


def test_export_commands_in_the_image_are_real_subcommands() -> None:
    from export.__main__ import build_parser as export_parser

    for match in re.finditer(r"python -m export (\w+)([^&\n]*)", DOCKERFILE):
        export_parser().parse_args([match.group(1), *shlex.split(match.group(2).rstrip("\\ "))])


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "test-command" in ci
    assert "pytest" in readme_block("test-command")


def test_cuda_image_pins_an_onnxruntime_gpu_built_for_its_cuda() -> None:
    """onnxruntime-gpu <= 1.26 links CUDA 12 libraries, >= 1.27 CUDA 13 (read off the wheels' NEEDED entries):
    an unpinned install on the CUDA 12 image would load no CUDA provider at all."""
    base = re.search(r"FROM nvidia/cuda:(\d+)\.\S+ AS runtime-cuda", DOCKERFILE)
    pin = re.search(r"'onnxruntime-gpu(>=[\d.]+,<([\d.]+))'", DOCKERFILE)
    assert base and pin, "the CUDA stage must name its CUDA image and pin onnxruntime-gpu"
    upper = tuple(int(part) for part in pin.group(2).split("."))
    if base.group(1) == "12":
        assert upper <= (1, 27), f"CUDA 12 image with onnxruntime-gpu{pin.group(1)}: 1.27+ needs CUDA 13"
    else:
        assert base.group(1) == "13" and upper > (1, 27), "a CUDA 13 image needs onnxruntime-gpu 1.27 or newer"
