"""Pure numpy: per-window predictions -> L3 row, presence and confidence (the seed's ramp correlation).

While L3 is inside a window, a good regressor's offset (L3 row minus window top) falls by one row per row the
window moves down. We look for the run of consecutive windows, one window height long, whose offsets correlate
best with that ideal ramp and whose presence probabilities are high, and read the L3 row off that run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l3edge.numeric import median


@dataclass(frozen=True)
class RampFit:
    """Result of the correlation step, in model-space rows."""

    found: bool
    """Mean presence probability over the best run reached the threshold."""
    row: float
    """Estimated L3 row (continuous; pixel centres at integers). NaN when there are no windows."""
    confidence: float
    """Mean presence probability over the best run times max(0, ramp correlation), in [0, 1]."""
    ramp_r: float
    """Pearson correlation of the best run's offsets with the ideal ramp (1 is perfect)."""
    presence: float
    """Mean presence probability over the best run."""
    n_windows: int
    """Windows that went into the fit."""
    spread: float = 0.0
    """Standard deviation of the L3 rows that the run's windows imply (window top + offset), in rows: 0 when
    every window points at the same row. A ramp can correlate perfectly with the ideal one while its slope
    is off (offsets falling by 0.75 a row instead of 1), which an unsure model does; the spread shows it."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), 0.0)


def fit_ramp(
    tops: np.ndarray,
    offsets: np.ndarray,
    presence_logits: np.ndarray,
    window_height: int,
    threshold: float,
) -> RampFit:
    """Locate L3 from per-window predictions.

    Args: tops: window top rows (model space), any order. offsets: predicted L3 row minus window top, per
    window. presence_logits: 'L3 in this window' logits, per window. window_height: window height in rows; the
    run length is the number of windows in one height. threshold: mean presence probability needed to report
    L3 found.
    """
    order = np.argsort(tops, kind="stable")
    t = np.asarray(tops, dtype=np.float64)[order]
    o = np.asarray(offsets, dtype=np.float64)[order]
    p = sigmoid(np.asarray(presence_logits, dtype=np.float64)[order])
    n = t.size
    if n == 0:
        return RampFit(False, float("nan"), 0.0, 0.0, 0.0, 0)
    step = median(np.diff(t)) if n > 1 else float(window_height)
    d = int(min(n, max(3, round(window_height / max(step, 1e-6)))))
    if n < 3:
        d = n
    seg_o = np.lib.stride_tricks.sliding_window_view(o, d)
    seg_t = np.lib.stride_tricks.sliding_window_view(t, d)
    seg_p = np.lib.stride_tricks.sliding_window_view(p, d)
    r = _pearson_rows(seg_o, -seg_t) if d >= 3 else np.ones(seg_o.shape[0])
    mean_p = seg_p.mean(-1)
    score = mean_p * np.maximum(r, 0.0) + 1e-6 * mean_p
    i = int(np.argmax(score))
    ts, os_, ps = seg_t[i], seg_o[i], seg_p[i]
    absolute = ts + os_
    inside = (os_ >= 0) & (os_ < window_height)
    w = ps * inside if np.any(inside) and ps[inside].sum() > 0 else np.ones_like(ps)
    row = float(np.sum(w * absolute) / np.sum(w))
    spread = float(np.sqrt(np.sum(w * (absolute - row) ** 2) / np.sum(w)))
    presence = float(mean_p[i])
    ramp_r = float(r[i])
    return RampFit(
        found=presence >= threshold,
        row=row,
        confidence=float(np.clip(presence * max(ramp_r, 0.0), 0.0, 1.0)),
        ramp_r=ramp_r,
        presence=presence,
        n_windows=n,
        spread=spread,
    )


@dataclass(frozen=True)
class Placement:
    """The ramp fit mapped onto the scan's slices."""

    found: bool
    """L3 reported found: the fit said so and its z lies inside the scanned range."""
    z_mm: float | None
    """Patient z of the estimate (None when not found)."""
    row: int | None
    """Index (superior -> inferior order) of the slice nearest to ``z_mm`` (None when not found)."""
    outside: bool
    """The fit found the level but placed it in the padding, outside the scanned range."""


def place_on_slices(fit: RampFit, z_of_row: float, z_slices: np.ndarray, default_half_mm: float) -> Placement:
    """Map the fitted row's z onto the scan: nearest slice, or not found when it lies outside the scan.

    Padding lets the model see a level at a scan edge, but a level placed in the padding is not in view.

    Args: fit: the ramp fit. z_of_row: patient z of ``fit.row`` (from the model-space RowGrid). z_slices:
    patient z of every slice, superior first. default_half_mm: half slice extent to use for a single-slice
    scan.
    """
    if not fit.found:
        return Placement(False, None, None, False)
    z_sl = np.asarray(z_slices, dtype=np.float64)
    half = median(np.abs(np.diff(z_sl))) / 2 if z_sl.size > 1 else default_half_mm
    if z_of_row > z_sl[0] + half or z_of_row < z_sl[-1] - half:
        return Placement(False, None, None, True)
    return Placement(True, float(z_of_row), int(np.argmin(np.abs(z_sl - z_of_row))), False)
