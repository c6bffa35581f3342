"""Pure numpy: per-level ramp fits -> one ordered ladder of vertebral levels, the two counts, confidence.

A multi-level model gives, per window, the row offset and presence logit of every level it knows (T10 ... S1).
Each level is first placed on its own by the seed's ramp correlation (``postprocess.fit_ramp``). The ladder
then checks the levels against each other:

- **Spacing.** The rows of T10 ... L5 must follow a ladder ``row = a + b * c`` where ``c`` is the level's
  position in a typical adult column (mm, ``CANONICAL_MM``) and ``b`` the patient's scale in rows per mm
  (0.6-1.5 x ``1 / mm_per_px``). A level is checked against the ladder fitted to the *other* levels
  (leave-one-out); one that lies more than ``OUTLIER_PITCH`` pitches off is an outlier. A level that the
  model does not find, between two found levels, is placed by the ladder (interpolation only).
- **Two counts.** Thoracic levels are named up from the lowest rib-bearing vertebra ("T12" is the lowest
  vertebra with ribs, whatever its number from the top), lumbar levels down from it: that is how the model is
  trained, so its L3 is "three below the last rib". Counted up from the sacrum, L3 is three above S1. The two
  agree when the sacrum lies one lumbar pitch below L5. When S1 sits a pitch lower (a sixth lumbar vertebra, a
  lumbarised S1) or a pitch higher (four free lumbar vertebrae: a sacralised L5, or a rib on L1), the counts
  disagree: the answer keeps the rib count (the documented convention) and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from l3edge.postprocess import RampFit, fit_ramp

# Typical adult centre-to-centre distances (mm) from each level to the next one down (body heights and discs
# of l3edge.phantom.levels, which follow published morphometry), accumulated from T10.
_PITCH_MM = {
    "T10": 28.5,
    "T11": 30.0,
    "T12": 31.5,
    "L1": 33.5,
    "L2": 35.3,
    "L3": 36.8,
    "L4": 38.5,
    "L5": 38.0,
}
LADDER_LEVELS = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
CANONICAL_MM: dict[str, float] = dict(
    zip(LADDER_LEVELS, np.concatenate([[0.0], np.cumsum(list(_PITCH_MM.values()))]).tolist(), strict=True)
)
"""Position of each level below the centre of T10 in a typical adult column, mm."""
OUTLIER_PITCH = 0.4
"""A level further than this many pitches from the ladder of the other levels is an outlier."""
SCALE_RANGE = (0.6, 1.5)
"""Plausible patient scale (rows per canonical mm, in units of 1 / mm_per_px)."""


@dataclass(frozen=True)
class LevelFit:
    """One level placed by the ladder (rows of the model-space image)."""

    name: str
    found: bool
    """Placed inside the image: found by its own ramp fit, or interpolated by the ladder."""
    row: float
    """Estimated row (NaN when not found)."""
    presence: float
    """Mean presence probability over its best ramp."""
    ramp_r: float
    """Correlation of its offsets with the ideal ramp."""
    ladder_row: float
    """Where the ladder of the other levels puts it (NaN when fewer than two other levels are found)."""
    off_ladder_pitch: float
    """|row - ladder_row| in pitches (NaN when there is no ladder)."""
    source: str
    """``model`` (its own ramp fit), ``ladder`` (interpolated between found neighbours) or ``none``."""
    spread: float = math.nan
    """How far apart the rows implied by the windows of its ramp lie (``RampFit.spread``), rows."""

    @property
    def outlier(self) -> bool:
        return self.source == "model" and self.off_ladder_pitch > OUTLIER_PITCH


@dataclass(frozen=True)
class Ladder:
    """Every level of a multi-level model, checked against the others."""

    levels: dict[str, LevelFit]
    scale: float
    """Fitted rows per canonical mm (NaN when fewer than two levels were found)."""
    extra_segments: int | None
    """Lumbar-type vertebrae between the lowest rib-bearing vertebra and the sacrum, minus five (0: the two
    counts agree; +1: a sixth lumbar; -1: four); None when S1 or a lumbar level above it is not found."""
    sacrum_count_rows: dict[str, float]
    """Where the count from the sacrum puts each lumbar level when the counts disagree (else empty)."""

    @property
    def counts_agree(self) -> bool | None:
        return None if self.extra_segments is None else self.extra_segments == 0

    def pitch_rows(self, name: str) -> float:
        """Distance from ``name`` to the next level down, in rows, at the fitted scale."""
        s = self.scale if math.isfinite(self.scale) else math.nan
        return s * _PITCH_MM.get(name, 35.0)

    def pitch_mm(self, name: str, mm_per_px: float) -> float:
        """``pitch_rows`` in mm; the typical adult pitch when the scale is unknown (fewer than two levels)."""
        p = self.pitch_rows(name) * mm_per_px
        return p if math.isfinite(p) else _PITCH_MM.get(name, 35.0)


def _wls(c: np.ndarray, r: np.ndarray, w: np.ndarray, b0: float) -> tuple[float, float]:
    """Weighted least squares ``r = a + b c`` with ``b`` kept in ``SCALE_RANGE`` x ``b0``."""
    lo, hi = SCALE_RANGE[0] * b0, SCALE_RANGE[1] * b0
    if c.size >= 2 and np.ptp(c) > 0:
        cm, rm = np.average(c, weights=w), np.average(r, weights=w)
        b = float(np.sum(w * (c - cm) * (r - rm)) / np.sum(w * (c - cm) ** 2))
        b = min(max(b, lo), hi)
    else:
        b = b0
    a = float(np.average(r - b * c, weights=w))
    return a, b


def _robust_fit(c: np.ndarray, r: np.ndarray, w: np.ndarray, b0: float) -> tuple[float, float, np.ndarray]:
    """Fit dropping the worst level while it lies more than OUTLIER_PITCH pitches off (3 levels kept at
    least). Returns (a, b, inlier mask)."""
    keep = np.ones(c.size, dtype=bool)
    a, b = _wls(c, r, w, b0)
    while keep.sum() > 3:
        a, b = _wls(c[keep], r[keep], w[keep], b0)
        e = np.abs(r - (a + b * c)) / (b * 33.0)
        e[~keep] = -1.0
        worst = int(np.argmax(e))
        if e[worst] <= OUTLIER_PITCH:
            break
        keep[worst] = False
    a, b = _wls(c[keep], r[keep], w[keep], b0)
    return a, b, keep


def fit_ladder(
    tops: np.ndarray,
    preds: np.ndarray,
    levels: tuple[str, ...],
    window_height: int,
    threshold: float,
    mm_per_px: float,
) -> Ladder:
    """Place every level of a multi-level model and check them against each other (see the module docstring).

    Args: tops: window top rows [N]. preds: model outputs per window [N, 2 L] (offsets of ``levels``, then
    their presence logits). levels: the model's levels, superior first. window_height: window rows.
    threshold: presence needed for a level's own fit to count as found. mm_per_px: model-space pixel size.
    """
    n = len(levels)
    fits: dict[str, RampFit] = {}
    for k, name in enumerate(levels):
        if preds.shape[0] == 0:
            fits[name] = RampFit(False, math.nan, 0.0, 0.0, 0.0, 0)
        else:
            fits[name] = fit_ramp(tops, preds[:, k], preds[:, n + k], window_height, threshold)
    b0 = 1.0 / mm_per_px
    on_ladder = [m for m in levels if m in CANONICAL_MM and m != "S1" and fits[m].found]
    c_all = np.array([CANONICAL_MM[m] for m in on_ladder], dtype=np.float64)
    r_all = np.array([fits[m].row for m in on_ladder], dtype=np.float64)
    w_all = np.array([max(fits[m].presence * max(fits[m].ramp_r, 0.05), 1e-3) for m in on_ladder])
    scale = math.nan
    if len(on_ladder) >= 2:
        _, scale, _ = _robust_fit(c_all, r_all, w_all, b0)

    def ladder_without(name: str) -> float:
        """The row the ladder of the other found levels gives ``name`` (NaN with fewer than two)."""
        if name not in CANONICAL_MM or name == "S1":
            return math.nan
        m = np.array([x != name for x in on_ladder], dtype=bool)
        if m.sum() < 2:
            return math.nan
        a, b, _ = _robust_fit(c_all[m], r_all[m], w_all[m], b0)
        return a + b * CANONICAL_MM[name]

    out: dict[str, LevelFit] = {}
    found_idx = [i for i, m in enumerate(levels) if fits[m].found]
    for i, name in enumerate(levels):
        f = fits[name]
        lr = ladder_without(name)
        pitch = (scale if math.isfinite(scale) else b0) * 33.0
        if f.found:
            off = abs(f.row - lr) / pitch if math.isfinite(lr) else math.nan
            out[name] = LevelFit(name, True, f.row, f.presence, f.ramp_r, lr, off, "model", f.spread)
        elif math.isfinite(lr) and found_idx and found_idx[0] < i < found_idx[-1]:
            out[name] = LevelFit(name, True, lr, f.presence, f.ramp_r, lr, 0.0, "ladder")
        else:
            out[name] = LevelFit(name, False, math.nan, f.presence, f.ramp_r, lr, math.nan, "none")
    extra, by_sacrum = _count_from_sacrum(out, scale)
    return Ladder(out, scale, extra, by_sacrum)


def _count_from_sacrum(levels: dict[str, LevelFit], scale: float) -> tuple[int | None, dict[str, float]]:
    """Extra lumbar segments between the lowest found lumbar-ladder level and S1, and (when they are not
    zero) the rows of the lumbar levels counted up from S1."""
    s1 = levels.get("S1")
    if s1 is None or not s1.found or not math.isfinite(scale):
        return None, {}
    above = [m for m in LADDER_LEVELS[:-1] if m in levels and levels[m].found and not levels[m].outlier]
    if not above:
        return None, {}
    low = above[-1]
    expected = scale * (CANONICAL_MM["S1"] - CANONICAL_MM[low])
    extra = int(round((s1.row - levels[low].row - expected) / (scale * 36.0)))
    if extra == 0:
        return 0, {}
    rows: dict[str, float] = {
        m: s1.row - scale * (CANONICAL_MM["S1"] - CANONICAL_MM[m])
        for m in ("L1", "L2", "L3", "L4", "L5")
        if m in levels
    }
    return extra, rows
