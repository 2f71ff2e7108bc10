"""`python -m export pipeline CONFIG`: base -> train each task -> export -> (soup) -> ensemble -> (index).

Output folder layout (`out` in the config)::

    base/                 the tiny base checkpoint (named sources live in cache_dir instead)
    train/<task>/         trained HF checkpoint, training_summary.json, train_log.jsonl, .done.json
    soup/<name>/          weight-averaged checkpoint of the soup's members, .done.json
    repo/                 the servable repository: members/<name>/ (.done.json inside), ensemble.json,
                          selection.json (when weights: dev), ensemble.done.json
    index/ + index.done.json   the FAISS index of the Tatoeba subset (when `index` is configured)

Every step is skipped when its `.done.json` holds the hash of its current inputs (see steps.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

from export.pipeline.config import BASE_MEMBER, PipelineConfig, PipelineConfigError
from export.pipeline.steps import DONE_FILE, StepLog, checkpoint_fingerprint, is_done, mark_done, read_result, step_hash
from export.tasks import TaskData
from service.repository import MemberSpec, read_json, write_json_atomic

PENDING_FILE = ".pending.json"
SELECTION_FILE = "selection.json"
ENSEMBLE_DONE = "ensemble.done.json"
INDEX_DONE = "index.done.json"
ADD_BATCH = 256


@dataclasses.dataclass
class Built:
    """A step's product as downstream steps see it: where it is and the hash that identifies it."""

    path: Path
    digest: str
    result: dict[str, Any]


def run_pipeline(
    config: PipelineConfig, verbose: bool = True, only: list[str] | None = None, skip: list[str] | None = None
) -> StepLog:
    """Run every step that is not already done for its current inputs; returns what ran and what was skipped.

    `only` trains and exports just those tasks and stops there: two processes with disjoint `only` lists
    use two machines' worth of cores (or two cores at one thread each) at once, and a final run without it
    skips their steps and does the soup, the ensemble and the index.

    `skip` leaves out tasks that neither the soup nor the ensemble reads (a control such as
    `upos_shuffled`) and still builds the rest, so the repository can be finished while such a task
    trains in another process; a later run without it trains only what was left out.
    """
    import torch

    for flag, names in (("--only", only), ("--skip", skip)):
        unknown = sorted(set(names or []) - set(config.tasks))
        if unknown:
            known = list(config.tasks)
            raise PipelineConfigError(
                f"{flag} names task(s) {unknown} that {config.source} does not train; it has {known}"
            )
    read_later = set(config.soup.members if config.soup else []) | set(
        config.ensemble.members if config.ensemble else []
    )
    read_skipped = sorted(set(skip or []) & read_later)
    if read_skipped:
        raise PipelineConfigError(f"--skip {read_skipped}: the soup or the ensemble of {config.source} reads them")

    log = StepLog(verbose=verbose)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    base = _base(config, log)
    trained: dict[str, Built] = {}
    exported: dict[str, Built] = {}
    for name in config.tasks:  # export each member as soon as it is trained, so it can be benchmarked early
        if (only and name not in only) or (skip and name in skip):
            continue
        trained[name] = _train(config, name, base, log)
        exported[name] = _export_trained(config, name, trained[name], base, log)
    if only:
        log.say(f"done (--only {','.join(only)}): {len(log.executed)} step(s) run, {len(log.skipped)} already done")
        return log
    needed = set(config.ensemble.members) if config.ensemble else set()
    if BASE_MEMBER in needed:
        exported[BASE_MEMBER] = _export_base(config, base, log)
    if config.soup is not None:
        soup = _soup(config, trained, log)
        exported[config.soup.name] = _export_checkpoint(
            config, config.soup.name, soup, base, log, tasks=_soup_tasks(config), training=soup.result, scores={}
        )
    if config.ensemble is not None:
        ensemble = _ensemble(config, exported, log)
        if config.index is not None:
            _index(config, ensemble, log)
    log.say(f"done: {len(log.executed)} step(s) run, {len(log.skipped)} already done -> {out / 'repo'}")
    return log


# --- steps --------------------------------------------------------------------------------------------------


def _run_step(
    log: StepLog, name: str, marker: Path, output: Path, inputs: dict[str, Any], work: Any, clear: bool = True
) -> Built:
    """Skip when done for these inputs; else clear the old marker (and output), do `work`, mark done."""
    digest = step_hash(name.split(":")[0], inputs)
    if is_done(marker, digest, output):
        log.skipped.append(name)
        log.say(f"{name}: up to date")
        return Built(output, digest, read_result(marker))
    log.say(f"{name}: running")
    marker.unlink(missing_ok=True)
    if clear and output.is_dir():
        shutil.rmtree(output)
    result = work(digest) or {}
    mark_done(marker, name, digest, inputs, result)
    log.executed.append(name)
    return Built(output, digest, result)


def _base(config: PipelineConfig, log: StepLog) -> Built:
    if isinstance(config.base, dict):
        from export.tiny import build_tiny_checkpoint

        seed = int(config.base["tiny"]["seed"])
        folder = config.out / "base"
        built = _run_step(
            log,
            "base",
            folder / DONE_FILE,
            folder,
            {"tiny": {"seed": seed}},
            lambda _: {"fingerprint": checkpoint_fingerprint(build_tiny_checkpoint(folder, seed=seed))},
        )
        return Built(folder, built.result["fingerprint"], {"name": f"tiny-random-xlmr-seed{seed}"})
    from export.sources.resolve import resolve_source

    folder = resolve_source(config.base, config.cache_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{config.source}: base {config.base!r} is not a local checkpoint folder")
    log.say(f"base: {config.base} -> {folder}")
    return Built(folder, checkpoint_fingerprint(folder), {"name": config.base})


def _train(config: PipelineConfig, name: str, base: Built, log: StepLog) -> Built:
    from export.train.loop import SUMMARY_FILE, train_on

    train_config = config.tasks[name]
    folder = config.out / "train" / name
    inputs = {
        "config": train_config.to_dict(),
        "base": base.digest,
        "data_dir": str(_data_dir(config).resolve()),
        "data_limit": config.data_limit,
    }
    digest = step_hash("train", inputs)
    pending = folder / PENDING_FILE
    resumable = pending.is_file() and read_json(pending).get("hash") == digest

    def work(digest: str) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(pending, {"hash": digest})
        task, retrieval = _training_data(config, train_config)
        summary = train_on(train_config, base.path, folder, task, retrieval, progress=log.verbose)
        pending.unlink(missing_ok=True)
        scores = summary["scores"]
        metric = scores["metric"]
        log.say(
            f"train:{name}: dev {metric} {scores['dev'][metric]:.4f}, retrieval dev P@1 "
            f"{scores['retrieval_dev_p1']:.4f}, {summary['training']['wall_time_s']} s"
        )
        return {"summary": SUMMARY_FILE}

    # an interrupted run of the same inputs resumes from its saved state instead of starting over
    return _run_step(log, f"train:{name}", folder / DONE_FILE, folder, inputs, work, clear=not resumable)


def _training_data(config: PipelineConfig, train_config: Any) -> tuple[Any, Any]:
    from export.tasks.retrieval_dev import load_retrieval_dev
    from export.train.loop import load_training_data

    data = load_training_data(train_config, _data_dir(config))
    tasks = [data] if isinstance(data, TaskData) else data
    limited = [_limit(t, config.data_limit) for t in tasks]
    retrieval = _limit_retrieval(load_retrieval_dev(_data_dir(config), train_config.dev_retrieval_langs), config)
    return (limited[0] if isinstance(data, TaskData) else limited), retrieval


def _export_trained(config: PipelineConfig, name: str, trained: Built, base: Built, log: StepLog) -> Built:
    summary = read_json(trained.path / "training_summary.json")
    training = dict(summary["training"])
    if config.data_limit:
        training["pipeline_data_limit"] = config.data_limit
    train_config = config.tasks[name]
    tasks = list(train_config.multi_tasks) if train_config.task == "multi" else [train_config.task]
    return _export_checkpoint(
        config, name, trained, base, log, tasks=tasks, training=training, scores=summary["scores"]
    )


def _export_base(config: PipelineConfig, base: Built, log: StepLog) -> Built:
    first = next(iter(config.tasks.values()))
    training = {"untrained": True, "pool_layer": first.pool_layer, "text_prefix": first.text_prefix}
    return _export_checkpoint(
        config, BASE_MEMBER, base, base, log, tasks=[], training=training, scores={}, layer=first.pool_layer
    )


def _export_checkpoint(
    config: PipelineConfig,
    name: str,
    source: Built,
    base: Built,
    log: StepLog,
    *,
    tasks: list[str],
    training: dict[str, Any],
    scores: dict[str, Any],
    layer: int = -1,
) -> Built:
    """Export a checkpoint (trained ones are already cut at their pooled layer, hence layer -1)."""
    from export.onnx_export import export_member

    folder = config.out / "repo" / "members" / name
    prefix = next(iter(config.tasks.values())).text_prefix if name == BASE_MEMBER else _prefix(config, name)
    # `packed` enters the step's inputs only when the config sets it, so configs written before it existed
    # keep their step hashes (and their exported members)
    knobs = {"max_length": 512, "tolerance": 1e-4, **config.export}
    inputs = {"source": source.digest, "export": knobs, "layer": layer, "prefix": prefix, "tasks": tasks}

    def work(_: str) -> dict[str, Any]:
        spec = export_member(
            source.path,
            config.out / "repo",
            name,
            layer=layer,
            max_length=int(knobs["max_length"]),
            text_prefix=prefix,
            tasks=tasks,
            base_model=str(base.result["name"]),
            tolerance=float(knobs["tolerance"]),
            training=training,
            packed=bool(knobs.get("packed", False)),
        )
        member_json = folder / "member.json"
        payload = MemberSpec.from_json(read_json(member_json), str(member_json)).to_json()
        payload["scores"] = scores
        write_json_atomic(member_json, payload)
        return {"dim": spec.dim, "parity_max_abs_diff": spec.parity_max_abs_diff}

    return _run_step(log, f"export:{name}", folder / DONE_FILE, folder, inputs, work, clear=False)


def _prefix(config: PipelineConfig, name: str) -> str:
    if name in config.tasks:
        return config.tasks[name].text_prefix
    assert config.soup is not None
    return config.tasks[config.soup.members[0]].text_prefix


def _soup(config: PipelineConfig, trained: dict[str, Built], log: StepLog) -> Built:
    from export.train.wise import soup

    assert config.soup is not None
    members = config.soup.members
    prefixes = {config.tasks[m].text_prefix for m in members}
    if len(prefixes) != 1:
        raise ValueError(f"{config.source}: soup.members {members} use different text_prefix values {sorted(prefixes)}")
    folder = config.out / "soup" / config.soup.name
    inputs = {"members": {m: trained[m].digest for m in members}}

    def work(_: str) -> dict[str, Any]:
        soup([trained[m].path for m in members], None, folder)
        return {"soup_of": members, "soup_weights": "uniform"}

    return _run_step(log, f"soup:{config.soup.name}", folder / DONE_FILE, folder, inputs, work)


def _soup_tasks(config: PipelineConfig) -> list[str]:
    assert config.soup is not None
    tasks: list[str] = []
    for member in config.soup.members:
        knobs = config.tasks[member]
        for task in knobs.multi_tasks if knobs.task == "multi" else (knobs.task,):
            if task not in tasks:
                tasks.append(task)
    return tasks


def _ensemble(config: PipelineConfig, exported: dict[str, Built], log: StepLog) -> Built:
    from export.repository_writer import write_ensemble

    assert config.ensemble is not None
    spec = config.ensemble
    repo = config.out / "repo"
    langs = next(iter(config.tasks.values())).dev_retrieval_langs
    inputs = {
        "members": {m: exported[m].digest for m in spec.members},
        "order": spec.members,
        "fusion": spec.fusion,
        "weights": spec.weights,
        "weight_grid": spec.weight_grid if spec.weights == "dev" else None,
        "dev": {"langs": list(langs), "data_dir": str(_data_dir(config).resolve()), "limit": config.data_limit},
    }
    if spec.selection != "best":  # only then, so that runs made before the option keep their step digests
        inputs["selection"] = spec.selection

    def work(_: str) -> dict[str, Any]:
        (repo / SELECTION_FILE).unlink(missing_ok=True)
        members, weights = list(spec.members), spec.weights
        if weights == "dev":
            members, weights = _dev_weights(config, repo, langs, log)
        assert weights is None or isinstance(weights, list)
        written = write_ensemble(repo, members, method=spec.fusion, weights=weights)
        log.say(f"ensemble: {written.members}, fusion {spec.fusion}, weights {weights}, dim {written.dim}")
        return {"members": written.members, "weights": weights, "dim": written.dim}

    return _run_step(log, "ensemble", repo / ENSEMBLE_DONE, repo / "ensemble.json", inputs, work, clear=False)


def _dev_weights(
    config: PipelineConfig, repo: Path, langs: tuple[str, ...], log: StepLog
) -> tuple[list[str], list[float]]:
    """Grid-search weights on the retrieval dev set; members weighted 0 are left out of ensemble.json."""
    from export.pipeline.fusion_dev import select_weights
    from export.tasks.retrieval_dev import load_retrieval_dev

    assert config.ensemble is not None
    dev = _limit_retrieval(load_retrieval_dev(_data_dir(config), langs), config)
    spec = config.ensemble
    selection = select_weights(repo, spec.members, spec.weight_grid, dev, rule=spec.selection)
    chosen, best = selection["chosen"], selection["best"]
    kept = [(m, w) for m, w in zip(config.ensemble.members, chosen["weights"], strict=True) if w > 0]
    selection["ensemble_members"] = [m for m, _ in kept]
    write_json_atomic(repo / SELECTION_FILE, selection)
    log.say(
        f"fusion weights on dev: {len(selection['candidates'])} candidates, best P@1 {best['p1']:.4f}; "
        f"rule {spec.selection}: P@1 {chosen['p1']:.4f} with {dict(kept)}"
    )
    return [m for m, _ in kept], [w for _, w in kept]


def _index(config: PipelineConfig, ensemble: Built, log: StepLog) -> Built:
    assert config.index is not None
    folder = config.out / "index"
    inputs = {
        "ensemble": ensemble.digest,
        "langs": config.index.langs,
        "per_lang": config.index.per_lang,
        "data_dir": str(_data_dir(config).resolve()),
    }

    def work(_: str) -> dict[str, Any]:
        return asyncio.run(_build_index(config, folder))

    return _run_step(log, "index", config.out / INDEX_DONE, folder, inputs, work)


async def _build_index(config: PipelineConfig, folder: Path) -> dict[str, Any]:
    """Index the Tatoeba subset through the service engine in-process (same embeddings as serving)."""
    from export.corpus import demo_corpus
    from service.config import Settings
    from service.engine import Engine
    from service.index import Sentence

    assert config.index is not None
    corpus = demo_corpus(_data_dir(config) / "tatoeba", config.index.langs, config.index.per_lang)
    settings = Settings(
        repo=config.out / "repo", index=folder, redis_url=None, snapshot_interval_s=0, device="cpu", port=0, grpc_port=0
    )
    engine = Engine(settings)
    await engine.start()
    try:
        for start in range(0, len(corpus), min(ADD_BATCH, settings.max_texts_per_request)):
            chunk = corpus[start : start + ADD_BATCH]
            await engine.add_sentences([Sentence(id=s.id, text=s.text, lang=s.lang) for s in chunk])
    finally:
        await engine.stop()
    return {"sentences": len(corpus), "langs": config.index.langs}


# --- data helpers -------------------------------------------------------------------------------------------


def _data_dir(config: PipelineConfig) -> Path:
    from export.tasks.files import resolve_data_dir

    return resolve_data_dir(config.data_dir)


def _limit(task: TaskData[Any], limits: dict[str, int]) -> TaskData[Any]:
    if not limits:
        return task
    return dataclasses.replace(
        task,
        train=task.train[: limits.get("train")],
        dev=task.dev[: limits.get("dev")],
        test=task.test[: limits.get("test")],
    )


def _limit_retrieval(dev: dict[str, tuple[list[str], list[str]]], config: PipelineConfig) -> dict[str, Any]:
    n = config.data_limit.get("retrieval")
    return {lang: (src[:n], tgt[:n]) for lang, (src, tgt) in dev.items()}
