"""tools.bench_refine: one table row per scan and pass count, and the module's pass count restored."""

from __future__ import annotations

from pathlib import Path

import pytest

import l3edge.refine as refinement
from tools.bench_refine import main


def test_rows_for_each_pass_count(phantom_cohort: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(phantom_cohort[0]), "--repeat", "1", "--passes", "1", "2"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {phantom_cohort[0]} |")]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "2"]
    assert all(float(r.split("|")[3]) > 0 for r in rows)  # the bundled model has a refiner
    assert refinement.REFINE_PASSES == 3
