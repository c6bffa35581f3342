"""Refinement: move the coarse L3 estimate to where a finer, short-window model puts the vertebral body.

The main model works at 4 mm per pixel with a 320 mm window: enough context to count vertebrae, but its
pixels are as tall as a disc. A refiner is a small fully convolutional model trained on a finer model space
(e.g. 1 mm per pixel, a 96 mm window) to regress the L3 row only when L3 lies near the window's centre (its
training band). It runs on a few windows shifted around the coarse estimate; each window whose prediction
falls inside the band gives one estimate of the row, and their median is the refined row. When no window
agrees, the coarse estimate stands. A refiner trained on "the vertebral body nearest the window centre"
(metadata level ``any``) refines every level a multi-level model places, all in one batch.

**To a fixed point.** One pass depends on where it starts: on real CT, two coarse estimates a few millimetres
apart (the same scan cropped at one end, or with every second slice) refined to answers up to 0.19 of a
level's pitch apart, where phantoms agreed within 0.05. So the windows are placed again around the refined
row, and again, until no estimate moves by more than ``REFINE_TOLERANCE_PX`` or after ``REFINE_PASSES``
passes; each pass runs only the estimates that still moved. With three passes the 16 cropped and thinned
variants of the two real_dev scans with L3 moved at most 0.06 pitch (one pass: 0.19) and every variant's L3
lay within 3 mm of the truth's centre (one pass: 12.6 mm), and 95% of the validation phantoms' right answers
moved at most 0.05 pitch under the crops (one pass: 0.19; models/README.md, "Model 0.5.0").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from l3edge.numeric import median, unique_sorted
from l3edge.preprocess import RowGrid, cut_windows

RunFn = Callable[[np.ndarray], np.ndarray]
REFINE_PASSES = 3
"""At most this many refiner passes per estimate (see the module docstring)."""
REFINE_TOLERANCE_PX = 0.5
"""An estimate that moves less than this (fine model pixels) in a pass has converged."""


def refine_rows(
    run: RunFn,
    channels: np.ndarray,
    rows: list[float],
    window_height: int,
    band: tuple[float, float],
    shifts_px: np.ndarray,
) -> list[tuple[float, int] | None]:
    """For each coarse estimate in ``rows``: the refined row and how many windows agreed, or None when none
    did. All windows of all estimates go through ``run`` as one batch.

    Args: run: the refiner ([B, C, H, W] -> [B, P, ...], channel 0 the offset from the window top).
    channels: the normalised fine model-space image [C, rows, W]. rows: the coarse estimates, in these rows.
    window_height: the refiner's window height. band: offsets the refiner was trained on, in window heights
    (e.g. (0.25, 0.75)). shifts_px: window centres relative to each estimate.
    """
    n_rows = channels.shape[1]
    if n_rows < window_height or not rows:
        return [None] * len(rows)
    shifts = np.asarray(shifts_px, dtype=np.float64)
    tops = [
        unique_sorted(
            np.clip(np.round(r - window_height / 2 + shifts).astype(np.int64), 0, n_rows - window_height)
        )
        for r in rows
    ]
    out = np.asarray(run(cut_windows(channels, np.concatenate(tops), window_height)), dtype=np.float32)
    offsets = out.reshape(out.shape[0], out.shape[1], -1)[:, 0, 0].astype(np.float64)
    result: list[tuple[float, int] | None] = []
    i = 0
    for t in tops:
        o = offsets[i : i + t.size]
        i += t.size
        ok = (o >= band[0] * window_height) & (o < band[1] * window_height)
        result.append((median(t[ok] + o[ok]), int(ok.sum())) if ok.any() else None)
    return result


def reach_px(
    window_height: int,
    band: tuple[float, float],
    shifts_px: tuple[int, ...] | np.ndarray,
    passes: int | None = None,
) -> float:
    """How far (fine model pixels) from a coarse estimate the windows of ``passes`` passes (default
    ``REFINE_PASSES``) can reach: half a window and the largest shift, plus, for each later pass, the most one
    pass can move an estimate."""
    shift = float(np.max(np.abs(np.asarray(shifts_px)))) if np.size(shifts_px) else 0.0
    step = shift + max(abs(band[0] - 0.5), abs(band[1] - 0.5)) * window_height
    n = REFINE_PASSES if passes is None else passes
    return window_height / 2 + shift + (max(n, 1) - 1) * step


def refine_zs(
    run: RunFn,
    channels: np.ndarray,
    grid: RowGrid,
    z_mm: list[float],
    window_height: int,
    band: tuple[float, float],
    shifts_px: tuple[int, ...] | np.ndarray,
    passes: int | None = None,
) -> list[float]:
    """:func:`refine_rows` in patient z, repeated to a fixed point: each coarse z in ``z_mm`` refined on
    ``channels`` (the fine model-space image whose rows ``grid`` maps) for at most ``passes`` passes
    (default: ``REFINE_PASSES``, read at each call so that ``tools/bench_refine.py`` can compare), or
    unchanged where no window agrees with the first pass. A later pass whose windows do not agree keeps the
    previous answer. The runtime and ``tools/`` both use it.
    """
    rows = [float(np.asarray(grid.z_to_row(v))) for v in z_mm]
    refined = [False] * len(rows)
    active = list(range(len(rows)))
    for _ in range(max(REFINE_PASSES if passes is None else passes, 1)):
        out = refine_rows(
            run, channels, [rows[i] for i in active], window_height, band, np.asarray(shifts_px)
        )
        moved = []
        for i, o in zip(active, out, strict=True):
            if o is None:
                continue
            if abs(o[0] - rows[i]) > REFINE_TOLERANCE_PX:
                moved.append(i)
            rows[i], refined[i] = o[0], True
        active = moved
        if not active:
            break
    return [
        float(np.asarray(grid.row_to_z(r))) if ok else v for v, r, ok in zip(z_mm, rows, refined, strict=True)
    ]
