"""Refinement: move the coarse L3 estimate to where a finer, short-window model puts the vertebral body.

The main model works at 4 mm per pixel with a 320 mm window: enough context to count vertebrae, but its
pixels are as tall as a disc. A refiner is a small fully convolutional model trained on a finer model space
(e.g. 1 mm per pixel, a 96 mm window) to regress the L3 row only when L3 lies near the window's centre (its
training band). It runs on a few windows shifted around the coarse estimate; each window whose prediction
falls inside the band gives one estimate of the L3 row, and their median is the refined row. When no window
agrees, the coarse estimate stands.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from l3edge.preprocess import cut_windows

RunFn = Callable[[np.ndarray], np.ndarray]


def refine_row(
    run: RunFn,
    channels: np.ndarray,
    row: float,
    window_height: int,
    band: tuple[float, float],
    shifts_px: np.ndarray,
) -> tuple[float, int] | None:
    """Refined row (in ``channels``' rows) near ``row``, and how many windows agreed; None when none did.

    Args: run: the refiner ([B, C, H, W] -> [B, 2, ...], channel 0 the offset from the window top).
    channels: the normalised fine model-space image [C, rows, W]. row: the coarse estimate, in these rows.
    window_height: the refiner's window height. band: offsets the refiner was trained on, in window heights
    (e.g. (0.25, 0.75)). shifts_px: window centres relative to ``row``.
    """
    rows = channels.shape[1]
    if rows < window_height:
        return None
    tops = np.round(row - window_height / 2 + np.asarray(shifts_px, dtype=np.float64)).astype(np.int64)
    tops = np.unique(np.clip(tops, 0, rows - window_height))
    out = np.asarray(run(cut_windows(channels, tops, window_height)), dtype=np.float32)
    offsets = out.reshape(out.shape[0], out.shape[1], -1)[:, 0, 0].astype(np.float64)
    ok = (offsets >= band[0] * window_height) & (offsets < band[1] * window_height)
    if not ok.any():
        return None
    return float(np.median(tops[ok] + offsets[ok])), int(ok.sum())
