"""The post-model step shared by the locator and the evaluation tools: windows through the model (and through
it mirrored), the ladder of levels, refinement, placement on the scan's slices, confidence and review.

    model-space channels -> predict (as is, and mirrored left-right) -> fit_ladder -> row -> z
    -> refine (all found levels at once) -> nearest slice (or not found when outside the scan) -> confidence

Mirroring: the MIP and its left-right mirror show the same spine, so a sound model puts each level at the
same row in both. The answer uses the mean of the two predictions per window; how far apart the two separate
answers lie is one input of the confidence (an unsure model is unstable under mirroring).

Confidence of a level, in [0, 1]: its mean presence over the fitted ramp, times the ramp correlation, times
how closely the windows of that ramp agree on one row, how well the level agrees with the ladder of the other
levels and with its mirrored answer, and (lumbar levels) whether the count from the last rib and the count
from the sacrum agree and whether the scan shows both ends to count from (lowest rib-bearing vertebra and
sacrum); a level near either end of the scan loses up to half. ``review`` is set when the confidence is below
the model's ``review_below``, when the counts disagree, or when the level was only interpolated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from l3edge.ladder import Ladder, fit_ladder
from l3edge.metadata import ModelMetadata
from l3edge.preprocess import RowGrid
from l3edge.sliding import RunFn, predict_images

RefineFn = Callable[[list[float]], list[float]]
"""Coarse patient z of several levels -> refined z (unchanged where the refiner does not agree)."""
FLIP_SD_MM = 10.0
SPREAD_SD_MM = 12.0
"""Scale of the windows' disagreement (``RampFit.spread``) at which the confidence falls to 0.61."""
LADDER_SD_PITCH = 0.25
NO_LADDER = 0.7
"""Confidence factor of a multi-level model's level that has too few found neighbours to be checked."""
INTERPOLATED = 0.5
COUNTS_DISAGREE = 0.5
ONE_COUNT = 0.6
"""Confidence factor of a lumbar level when the scan does not show both ends to count from (the lowest
rib-bearing vertebra and the sacrum): it was counted from one end only."""
EDGE_MM = 40.0
"""A level closer than this to either end of the scan loses confidence in proportion (half at the edge)."""


@dataclass(frozen=True)
class PlacedLevel:
    """One level on the scan."""

    name: str
    found: bool
    """Inside the scanned range."""
    z_mm: float | None
    """Patient z (None when not found)."""
    row: int | None
    """Index (superior-first) of the slice nearest ``z_mm`` (None when not found)."""
    confidence: float
    presence: float
    ramp_r: float
    source: str
    """``model``, ``ladder`` (interpolated between found neighbours) or ``none``."""
    outside: bool = False
    """The model placed the level in the padding, outside the scanned range (reported not found)."""
    mirror_shift_mm: float = math.nan
    """|z as is - z mirrored| of the coarse answers."""


@dataclass(frozen=True)
class Placement:
    """Every level the model knows, placed on one scan."""

    levels: dict[str, PlacedLevel]
    counts_agree: bool | None
    """The count from the lowest rib and the count from the sacrum agree (None: cannot tell)."""
    extra_segments: int | None
    """See ``Ladder.extra_segments``."""
    sacrum_count_z: dict[str, float] = field(default_factory=dict)
    """When the counts disagree: patient z of the lumbar levels counted up from S1."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """``cnn`` (the model runs), ``postprocess`` (ramp fits, ladder, placement), ``refine`` (if any)."""

    def review(self, level: str, review_below: float) -> bool:
        lv = self.levels[level]
        if not lv.found:
            return False
        lumbar = level.startswith("L")
        return (
            lv.confidence < review_below or lv.source == "ladder" or (lumbar and self.counts_agree is False)
        )

    def warnings(self, level: str) -> list[str]:
        out = []
        if self.counts_agree is False and self.extra_segments is not None:
            n = 5 + self.extra_segments
            alt = self.sacrum_count_z.get(level)
            where = f"; counted up from the sacrum, {level} would be at z = {alt:.1f} mm" if alt else ""
            out.append(
                f"the vertebral counts disagree: {n} lumbar-type vertebrae between the lowest rib-bearing "
                f"vertebra and the sacrum; lumbar levels are counted down from the lowest rib{where}"
            )
        lv = self.levels.get(level)
        if lv is not None and lv.source == "ladder":
            out.append(f"{level} was not seen by the model; placed between its neighbours by the ladder")
        if lv is not None and lv.outside:
            out.append(f"the model placed {level} outside the scan (in the padding); reported not found")
        return out


def _level_preds(preds: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Model outputs -> [N, 2 L] (offsets of ``meta.model_levels``, then their logits)."""
    idx = [meta.channels_of(m) for m in meta.model_levels]
    cols = [o for o, _ in idx] + [p for _, p in idx]
    if preds.shape[0] == 0:
        return np.zeros((0, len(cols)), dtype=np.float32)
    return preds[:, cols]


def _inside(z: float, z_slices: np.ndarray, default_half_mm: float) -> tuple[bool, int]:
    half = float(np.median(np.abs(np.diff(z_slices)))) / 2 if z_slices.size > 1 else default_half_mm
    inside = z_slices[-1] - half <= z <= z_slices[0] + half
    return bool(inside), int(np.argmin(np.abs(z_slices - z)))


def place_levels(
    run: RunFn,
    channels: np.ndarray,
    grid: RowGrid,
    meta: ModelMetadata,
    stride: int,
    output_stride: int | None,
    z_slices: np.ndarray,
    refine: RefineFn | None = None,
    mirror: bool = True,
) -> Placement:
    """Every level of ``meta``'s model on one scan (see the module docstring).

    Args: run: the model. channels: normalised model-space image [C, rows, W]. grid: its RowGrid. meta: the
    model's metadata. stride / output_stride: window stride and strip mode (None: per window). z_slices:
    patient z of the scan's slices, superior first. refine: refines coarse z's (None: no refiner). mirror:
    also run the mirrored image.
    """
    sp = meta.space
    h, thr, mm = sp.window_height_px, meta.presence_threshold, sp.mm_per_px
    levels = meta.model_levels
    t0 = time.perf_counter()
    images = [channels, np.ascontiguousarray(channels[..., ::-1])] if mirror else [channels]
    tops, outs = predict_images(run, images, h, stride, output_stride)  # one batch: the MIP and its mirror
    t1 = time.perf_counter()
    preds = _level_preds(outs[0], meta)
    shift: dict[str, float] = {}
    if mirror:
        preds_m = _level_preds(outs[1], meta)
        lad_a = fit_ladder(tops, preds, levels, h, thr, mm)
        lad_b = fit_ladder(tops, preds_m, levels, h, thr, mm)
        for m in levels:
            a, b = lad_a.levels[m], lad_b.levels[m]
            if a.found and b.found:
                shift[m] = abs(a.row - b.row) * mm
        preds = 0.5 * (preds + preds_m)
    lad = fit_ladder(tops, preds, levels, h, thr, mm)
    z_coarse = {m: float(np.asarray(grid.row_to_z(f.row))) for m, f in lad.levels.items() if f.found}
    sacrum = {m: float(np.asarray(grid.row_to_z(r))) for m, r in lad.sacrum_count_rows.items()}
    t2 = time.perf_counter()
    if refine is not None and (z_coarse or sacrum):
        keys = list(z_coarse) + [f"sacrum:{m}" for m in sacrum]
        refined = refine(list(z_coarse.values()) + list(sacrum.values()))
        done = dict(zip(keys, refined, strict=True))
        z_coarse = {m: done[m] for m in z_coarse}
        sacrum = {m: done[f"sacrum:{m}"] for m in sacrum}
    t3 = time.perf_counter()
    out = {}
    multi = len(levels) > 1
    zs = np.asarray(z_slices, dtype=np.float64)
    both_ends = all(m in z_coarse and zs.min() <= z_coarse[m] <= zs.max() for m in ("T12", "S1"))
    for m, f in lad.levels.items():
        conf = _confidence(lad, m, shift.get(m), multi, mm)
        if multi and m.startswith("L") and not both_ends:
            conf *= ONE_COUNT
        if m in z_coarse and zs.size:
            edge = min(z_coarse[m] - zs.min(), zs.max() - z_coarse[m])
            conf *= float(np.clip(0.5 + 0.5 * edge / EDGE_MM, 0.5, 1.0))
        if m not in z_coarse:
            out[m] = PlacedLevel(m, False, None, None, 0.0, f.presence, f.ramp_r, f.source)
            continue
        z = z_coarse[m]
        inside, row = _inside(z, np.asarray(z_slices, dtype=np.float64), mm / 2)
        if not inside:
            out[m] = PlacedLevel(m, False, None, None, conf, f.presence, f.ramp_r, f.source, True)
            continue
        out[m] = PlacedLevel(
            m, True, z, row, conf, f.presence, f.ramp_r, f.source, False, shift.get(m, math.nan)
        )
    timings = {"cnn": _ms(t1 - t0), "postprocess": _ms(t2 - t1 + time.perf_counter() - t3)}
    if refine is not None:
        timings["refine"] = _ms(t3 - t2)
    return Placement(out, lad.counts_agree, lad.extra_segments, sacrum, timings)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _confidence(
    lad: Ladder, name: str, mirror_shift_mm: float | None, multi: bool, mm_per_px: float
) -> float:
    f = lad.levels[name]
    c = f.presence * max(f.ramp_r, 0.0)
    if math.isfinite(f.spread):
        c *= math.exp(-0.5 * (f.spread * mm_per_px / SPREAD_SD_MM) ** 2)
    if multi:
        if f.source == "ladder":
            c = max(c, 0.5) * INTERPOLATED
        elif math.isfinite(f.off_ladder_pitch):
            c *= math.exp(-0.5 * (f.off_ladder_pitch / LADDER_SD_PITCH) ** 2)
        else:
            c *= NO_LADDER
        if name.startswith("L") and lad.counts_agree is False:
            c *= COUNTS_DISAGREE
    if mirror_shift_mm is not None:
        c *= math.exp(-0.5 * (mirror_shift_mm / FLIP_SD_MM) ** 2)
    return float(np.clip(c, 0.0, 1.0))
