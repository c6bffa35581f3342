"""Refinement: move the coarse L3 estimate to where a finer, short-window model puts the vertebral body.

The main model works at 4 mm per pixel with a 320 mm window: enough context to count vertebrae, but its
pixels are as tall as a disc. A refiner is a small fully convolutional model trained on a finer model space
(e.g. 1 mm per pixel, a 96 mm window) to regress the L3 row only when L3 lies near the window's centre (its
training band). It runs on a few windows shifted around the coarse estimate; each window whose prediction
falls inside the band gives one estimate of the row, and their median is the refined row. When no window
agrees, the coarse estimate stands. A refiner trained on "the vertebral body nearest the window centre"
(metadata level ``any``) refines every level a multi-level model places, all in one batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from l3edge.numeric import median, unique_sorted
from l3edge.preprocess import RowGrid, cut_windows

RunFn = Callable[[np.ndarray], np.ndarray]


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


def refine_zs(
    run: RunFn,
    channels: np.ndarray,
    grid: RowGrid,
    z_mm: list[float],
    window_height: int,
    band: tuple[float, float],
    shifts_px: tuple[int, ...] | np.ndarray,
) -> list[float]:
    """:func:`refine_rows` in patient z: each coarse z in ``z_mm`` refined on ``channels`` (the fine
    model-space image whose rows ``grid`` maps), or unchanged where no window agrees. The runtime and
    ``tools/`` both use it.
    """
    rows = [float(np.asarray(grid.z_to_row(v))) for v in z_mm]
    out = refine_rows(run, channels, rows, window_height, band, np.asarray(shifts_px))
    return [
        v if o is None else float(np.asarray(grid.row_to_z(o[0]))) for v, o in zip(z_mm, out, strict=True)
    ]
