"""Hubness rescoring against a reference (`--hubness-reference`): r_y over fixed reference vectors in the
index (synthetic geometry), then the engine end to end on the tiny repository: the file is read and
embedded at start, stored means name their source, survive restarts, and bad files refuse to start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_benchmarks_rescoring import hub_world
from test_rescore_engine import NAMES, QUERY, R_X, engine_run, plant, planted

from service.config import Settings
from service.engine import Engine
from service.errors import StartupError
from service.hubness import reference_means
from service.index import IndexParams, Sentence, SentenceIndex

FINGERPRINT = "f" * 16
REFERENCE_LINES = ["Das ist ein Satz.", "C'est une phrase.", "", "Esto es una frase.", "To jest zdanie.", "文です。"]


def hub_geometry() -> tuple[np.ndarray, np.ndarray]:
    """Rows [H, C1-C4, T1-T3] on e0..e10 (H = e0 with a crowd around it; Tj mostly off e0) and a reference of
    four "other-language queries" 0.8 e0 + 0.6 e10: r_y is 0.8 for H, 0.76 for Ci, 0.24 for Tj. The rows are
    the benchmark tests' hub world (its targets), so the service and the benchmark are tested on one geometry."""
    _, rows, _ = hub_world()
    e = np.eye(11)
    return rows, np.stack([0.8 * e[0] + 0.6 * e[10]] * 4).astype(np.float32)


def r_of(index: SentenceIndex, query: np.ndarray) -> dict[str, float]:
    ((hits, r_y),) = index.search_with_neighbourhood(query[None, :], len(NAMES))
    return {h.id: float(r) for h, r in zip(hits, r_y, strict=True)}


def test_index_measures_r_against_the_reference_and_never_lets_it_go_stale(tmp_path: Path) -> None:
    rows, reference = hub_geometry()
    query = rows[5] / np.linalg.norm(rows[5])
    index = SentenceIndex.open(tmp_path / "i", 11, FINGERPRINT, IndexParams(), reference=reference, reference_id="r1")
    index.add([Sentence(n, n, "xx") for n in NAMES], rows)
    r = r_of(index, query)
    assert r["H"] == pytest.approx(0.8, abs=1e-6) and r["C1"] == pytest.approx(0.76, abs=1e-6)
    assert r["T1"] == pytest.approx(0.24, abs=1e-6)
    index.delete(["C1", "C2"])  # among the index's own rows H would lose crowd; against the reference nothing moves
    index.save()  # compacts: rows shift, their means move with them
    assert r_of(index, query) == pytest.approx({k: v for k, v in r.items() if k not in ("C1", "C2")}, abs=1e-6)
    stats = index.stats()
    assert stats["neighbourhood_k"] == 16 and stats["neighbourhood_source"] == "reference:r1"
    assert stats["neighbourhood_version"] == stats["version"]  # never stale: nothing to recompute
    index.close()
    own = SentenceIndex.open(tmp_path / "i", 11, FINGERPRINT, IndexParams(), neighbourhood=True)
    assert own.stats()["neighbourhood_source"] == "own rows"  # another source: recomputed at open
    assert r_of(own, query)["H"] == pytest.approx((2 * 0.95 + 2 * 0.3) / 4, abs=1e-6)  # C3, C4, two of Tj
    own.close()
    with pytest.raises(StartupError, match=r"expected vectors of shape \[n >= 1, 11\], got \(4, 5\)"):
        SentenceIndex.open(tmp_path / "j", 11, FINGERPRINT, IndexParams(), reference=reference[:, :5], reference_id="x")
    with pytest.raises(StartupError, match="a reference_id is needed"):
        SentenceIndex.open(tmp_path / "j", 11, FINGERPRINT, IndexParams(), reference=reference)


def test_engine_embeds_the_reference_and_rescores_against_it(tiny_repo: Path, tmp_path: Path) -> None:
    ref_file = tmp_path / "reference.txt"
    ref_file.write_text("\n".join(REFERENCE_LINES) + "\n", encoding="utf-8")
    seen: dict[str, Any] = {}

    async def first(engine: Engine) -> None:
        served = engine.metrics.registry.get_sample_value
        member = engine.repo.members[0].spec.name if engine.repo else ""
        assert served("xret_encoder_tokens_total", {"member": member, "kind": "real"}) == 0  # start-up work only
        reference = (await engine.embed([t for t in REFERENCE_LINES if t])).vectors
        query = (await engine.embed([QUERY])).vectors[0]
        vectors = planted(query)
        plant(engine, vectors)
        index = engine._index
        assert isinstance(index, SentenceIndex)
        r = r_of(index, query)
        expected = reference_means(vectors, reference)
        assert [r[n] for n in NAMES] == pytest.approx(expected.tolist(), abs=1e-5)
        (margin,) = await engine.search([QUERY], k=3, rescore="margin")
        cos = {n: float(vectors[i] @ query / np.linalg.norm(query)) for i, n in enumerate(NAMES)}
        assert margin[0].score == pytest.approx(cos[margin[0].id] / ((R_X + r[margin[0].id]) / 2), abs=1e-4)
        seen["r"], seen["source"] = r, engine.stats()["index"]["neighbourhood_source"]

    async def again(engine: Engine) -> None:
        index = engine._index
        assert isinstance(index, SentenceIndex)
        assert engine.stats()["index"]["neighbourhood_source"] == seen["source"]
        query = (await engine.embed([QUERY])).vectors[0]
        assert r_of(index, query) == pytest.approx(seen["r"], abs=1e-6)  # read from the snapshot as stored

    index = tmp_path / "index"
    engine_run(tiny_repo, index, first, hubness_reference=ref_file, neighbourhood_stats=False)
    assert seen["source"].startswith("reference:") and len(seen["source"]) == len("reference:") + 16
    engine_run(tiny_repo, index, again, hubness_reference=ref_file, neighbourhood_stats=False)
    ref_file.write_text("Ein anderer Satz.\nUne autre phrase.\n", encoding="utf-8")

    async def changed(engine: Engine) -> None:
        assert engine.stats()["index"]["neighbourhood_source"] not in ("own rows", seen["source"])

    engine_run(tiny_repo, index, changed, hubness_reference=ref_file, neighbourhood_stats=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it"),
        (b"\n  \n", "no sentences"),
        (b"ok\n\xff\xfe\n", r"not UTF-8 \(byte 3\)"),
        (b"ok\n" + b"x" * 60 + b"\n", "line 2 has 60 characters, over the 50"),
    ],
)
def test_a_bad_reference_file_refuses_to_start_and_names_the_problem(
    tiny_repo: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "reference.txt"
    if content is not None:
        path.write_bytes(content)
    settings = Settings(
        repo=tiny_repo, index=tmp_path / "index", redis_url=None, hubness_reference=path, max_chars_per_text=50
    )
    with pytest.raises(StartupError, match=f"hubness reference {path}: {message}"):
        asyncio.run(Engine(settings).start())
