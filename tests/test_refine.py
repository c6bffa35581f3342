"""Refinement to a fixed point (l3edge.refine.refine_zs) and how far its windows reach."""

from __future__ import annotations

import numpy as np
import pytest

from l3edge.preprocess import RowGrid
from l3edge.refine import REFINE_PASSES, reach_px, refine_zs

H = 32
BAND = (0.25, 0.75)
BODY_ROW = 60.0


def _image(rows: int = 160) -> np.ndarray:
    """Row index in every pixel, so that a fake refiner can read where its window starts."""
    return np.broadcast_to(np.arange(rows, dtype=np.float32)[None, :, None], (3, rows, 8)).copy()


def _halfway_refiner(calls: list[int]):
    """A refiner that moves each window's estimate halfway from the window's centre to BODY_ROW: one pass
    depends on where it starts, and repeated passes converge on BODY_ROW."""

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        tops = batch[:, 0, 0, 0].astype(np.float64)
        centre = tops + H / 2
        offsets = centre + 0.5 * (BODY_ROW - centre) - tops
        return np.stack([offsets, np.zeros_like(offsets)], axis=1).reshape(-1, 2, 1, 1)

    return run


def test_passes_converge_where_one_pass_depends_on_the_start() -> None:
    grid = RowGrid(z0_mm=0.0, mm_per_px=1.0)  # z = -row
    calls: list[int] = []
    run = _halfway_refiner(calls)
    one = refine_zs(run, _image(), grid, [-50.0, -54.0], H, BAND, (0,), passes=1)
    assert one == pytest.approx([-55.0, -57.0])  # two starts 4 rows apart: two answers 2 rows apart
    calls.clear()
    three = refine_zs(run, _image(), grid, [-50.0, -54.0], H, BAND, (0,), passes=3)
    # (window tops are whole rows: 55 -> 57.5 -> 59 and 57 -> 58.5 -> 59)
    assert three == pytest.approx([-59.0, -59.0])
    assert calls == [2, 2, 2]


def test_a_converged_estimate_stops_and_one_no_window_agrees_with_stays() -> None:
    grid = RowGrid(z0_mm=0.0, mm_per_px=1.0)
    calls: list[int] = []
    run = _halfway_refiner(calls)
    # 60.4 moves 0.4 rows (its window starts on a whole row; under the tolerance): done after one pass.
    # 140: the window's estimate falls outside the band (a body more than a quarter window away), so the
    # coarse answer stands.
    got = refine_zs(run, _image(), grid, [-60.4, -140.0], H, BAND, (0,), passes=REFINE_PASSES)
    assert got == pytest.approx([-60.0, -140.0])
    assert calls == [2]


def test_reach_covers_every_pass() -> None:
    # half a window and the largest shift, then per later pass the largest shift and the band's half width
    assert reach_px(96, (0.38, 0.62), (-8, 0, 8), passes=1) == pytest.approx(56.0)
    assert reach_px(96, (0.38, 0.62), (-8, 0, 8), passes=3) == pytest.approx(56.0 + 2 * (8 + 0.12 * 96))
