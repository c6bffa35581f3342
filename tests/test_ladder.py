"""The ladder of levels (l3edge.ladder) and the shared post-model step (l3edge.place) on synthetic model
outputs whose answer is known: ideal per-window offsets for given level rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l3edge.ladder import CANONICAL_MM, LADDER_LEVELS, fit_ladder
from l3edge.metadata import ModelMetadata
from l3edge.place import place_levels
from l3edge.preprocess import RowGrid
from tests.tiny_model import TINY_SPACE

H, MM = 80, 4.0


def ideal_preds(rows: dict[str, float], n_rows: int = 400, stride: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per-window outputs of a perfect model: offset = row - top, presence logit +-8 (inside / outside)."""
    tops = np.arange(0, n_rows - H + 1, stride)
    off, logit = [], []
    for m in LADDER_LEVELS:
        r = rows.get(m, math.nan)
        o = r - tops if math.isfinite(r) else np.full(tops.size, H / 2)
        off.append(o)
        inside = (o >= 0) & (o < H) if math.isfinite(r) else np.zeros(tops.size, bool)
        logit.append(np.where(inside, 8.0, -8.0))
    return tops, np.stack(off + logit, axis=1).astype(np.float32)


def column(top_row: float = 100.0, scale: float = 1.0, lumbar: int = 5) -> dict[str, float]:
    """Rows of a column whose T10 is at ``top_row``; a sixth lumbar pushes S1 one pitch down, four lift it."""
    rows = {m: top_row + scale * CANONICAL_MM[m] / MM for m in LADDER_LEVELS}
    rows["S1"] += (lumbar - 5) * scale * 38.0 / MM
    if lumbar == 4:
        del rows["L5"]
    return rows


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.25])
def test_a_normal_column_is_placed_and_counts_agree(scale: float) -> None:
    truth = column(scale=scale)
    tops, preds = ideal_preds(truth)
    lad = fit_ladder(tops, preds, LADDER_LEVELS, H, 0.5, MM)
    for m, r in truth.items():
        f = lad.levels[m]
        assert f.found and f.source == "model" and abs(f.row - r) < 0.5, m
        assert not f.outlier
    assert lad.counts_agree is True and lad.extra_segments == 0
    assert lad.scale == pytest.approx(scale / MM, rel=0.05)


@pytest.mark.parametrize(("lumbar", "extra"), [(6, 1), (4, -1)])
def test_transitional_columns_make_the_counts_disagree(lumbar: int, extra: int) -> None:
    truth = column(lumbar=lumbar)
    tops, preds = ideal_preds(truth)
    lad = fit_ladder(tops, preds, LADDER_LEVELS, H, 0.5, MM)
    assert lad.counts_agree is False and lad.extra_segments == extra
    # counted up from S1, L3 lies one pitch off the rib count's L3
    assert lad.sacrum_count_rows["L3"] == pytest.approx(
        truth["S1"] - (CANONICAL_MM["S1"] - CANONICAL_MM["L3"]) / MM
    )
    assert abs(lad.sacrum_count_rows["L3"] - truth["L3"]) > 0.7 * 36 / MM


def test_an_outlying_level_is_flagged_and_a_missing_one_interpolated() -> None:
    truth = column()
    wrong = dict(truth, L3=truth["L3"] + 9.0)  # one level a whole vertebra off
    tops, preds = ideal_preds(wrong)
    lad = fit_ladder(tops, preds, LADDER_LEVELS, H, 0.5, MM)
    assert lad.levels["L3"].outlier and not lad.levels["L2"].outlier
    assert abs(lad.levels["L3"].ladder_row - truth["L3"]) < 1.0
    gap = {m: r for m, r in truth.items() if m != "L2"}
    lad = fit_ladder(*ideal_preds(gap), LADDER_LEVELS, H, 0.5, MM)
    f = lad.levels["L2"]
    assert f.found and f.source == "ladder" and abs(f.row - truth["L2"]) < 1.0
    # extrapolation is not allowed: a level beyond the last found one stays not found
    short = {m: r for m, r in truth.items() if m in ("T10", "T11", "T12", "L1")}
    lad = fit_ladder(*ideal_preds(short), LADDER_LEVELS, H, 0.5, MM)
    assert not lad.levels["L3"].found


def test_no_windows_no_levels() -> None:
    lad = fit_ladder(np.zeros(0), np.zeros((0, 2)), LADDER_LEVELS, H, 0.5, MM)
    assert not any(f.found for f in lad.levels.values()) and lad.counts_agree is None


def test_place_levels_confidence_review_and_mirror() -> None:
    from dataclasses import replace

    space = replace(TINY_SPACE, window_height_px=H, window_width_px=16)
    meta = ModelMetadata(
        "t", "0", space, output_stride_px=None, level="L3", levels=LADDER_LEVELS, review_below=0.5
    )
    truth = column()
    n_rows = 400
    tops, ideal = ideal_preds(truth, n_rows, 4)
    lopsided = {"flip": False}

    def run(batch: np.ndarray) -> np.ndarray:
        # per-window model: the window's top is encoded in the first pixel of channel 0 (see below)
        t = np.rint(batch[:, 0, 0, 0]).astype(int)
        out = ideal[np.searchsorted(tops, t)].copy()
        mirrored = batch[0, 1, 0, 0] < 0
        if mirrored and lopsided["flip"]:
            out[:, LADDER_LEVELS.index("L3")] += 6.0  # the mirrored image puts L3 six rows lower
        return out[:, :, None, None]

    channels = np.zeros((3, n_rows, 16), np.float32)
    channels[0, :, 0] = channels[0, :, -1] = np.arange(n_rows)  # each window's first row: where it starts
    channels[1, :, 0], channels[1, :, -1] = 1.0, -1.0  # mirroring swaps these two columns
    grid = RowGrid(z0_mm=0.0, mm_per_px=MM)
    z_slices = -MM * np.arange(n_rows)
    # (the crops would overwrite the rows that encode the window tops: see test_agreement.py for them)
    placed = place_levels(run, channels, grid, meta, 4, None, z_slices, crops=False)
    l3 = placed.levels["L3"]
    assert l3.found and abs(l3.z_mm - float(grid.row_to_z(truth["L3"]))) < 2.0
    assert l3.confidence > 0.9 and not placed.review("L3", meta.review_below)
    assert l3.mirror_shift_mm == pytest.approx(0.0, abs=1e-6)
    lopsided["flip"] = True
    placed = place_levels(run, channels, grid, meta, 4, None, z_slices, crops=False)
    l3 = placed.levels["L3"]
    assert l3.mirror_shift_mm == pytest.approx(24.0, abs=2.0)  # 6 rows of 4 mm, reported
    assert abs(l3.z_mm - float(grid.row_to_z(truth["L3"]))) == pytest.approx(12.0, abs=2.0)  # the mean
    # refinement receives every found level at once, with the crops' levels in the same call
    seen: list[int] = []
    lopsided["flip"] = False
    refine = lambda zs: seen.append(len(zs)) or zs  # noqa: E731
    place_levels(run, channels, grid, meta, 4, None, z_slices, refine=refine, crops=False)
    place_levels(run, channels, grid, meta, 4, None, z_slices, refine=refine)
    assert seen == [len(LADDER_LEVELS), 3 * len(LADDER_LEVELS)]
