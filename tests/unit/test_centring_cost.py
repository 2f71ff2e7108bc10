"""The centring-cost benchmark runs end to end on a small index and writes its JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.load import centring_cost


def test_small_run_writes_ratios_for_every_shape_and_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    assert centring_cost.main(["--sizes", "400", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["size"] == 400 and result["open_s"] >= 0 and result["recount_s"] >= 0
    shapes = [(r["queries"], r["langs"]) for r in result["searches"]]
    assert shapes == [(1, "all"), (16, "all"), (1, "eng"), (16, "eng")]
    for row in result["searches"]:
        assert row["plain_ms"] > 0 and row["centred_ms"] > 0
        assert row["ratio"] > 0  # centred / plain of unrounded medians (the ms are rounded)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_a_size_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        centring_cost.main(["--sizes", "0", "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2
