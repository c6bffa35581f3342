"""The post-model step shared by the locator and the evaluation tools: windows through the model (and through
it mirrored), the ladder of levels, refinement, placement on the scan's slices, confidence and review.

    model-space channels -> predict (as is, and mirrored left-right) -> fit_ladder -> row -> z
    -> refine (all found levels at once) -> nearest slice (or not found when outside the scan) -> confidence

Mirroring: the MIP and its left-right mirror show the same spine, so a sound model puts each level at the
same row in both. The answer uses the mean of the two predictions per window; how far apart the two separate
answers lie is reported (``mirror_shift_mm``).

Confidence of a level, in [0, 1] (``CONFIDENCE_VERSION`` 3): its mean presence over the fitted ramp, times
the ramp correlation, times how well the level agrees with the ladder of the other levels, and (lumbar
levels) whether the count from the last rib and the count from the sacrum agree and whether the scan shows
both ends to count from (lowest rib-bearing vertebra and sacrum); a level near either end of the scan loses
up to half; and (``l3edge.agreement``) how far the answer moves when the scan is cropped at either end.
Version 1 also multiplied in the windows' spread and the mirrored answer's shift; on the validation phantoms
neither separated right from wrong answers (AUROC 0.59 each, against 0.85 for the crop shift), and on real CT
the spread is about 14 mm for right and wrong answers alike, so they only pulled real confidences down.

A level whose body the scan's first or last slice cuts is reported not found. ``review`` is set when the
confidence is below the review threshold (``review_below``: the model's, if it was chosen for this
confidence, else the runtime's ``REVIEW_BELOW``), when the counts disagree, when the level was only
interpolated, when a crop names another vertebra, or when neither the lowest rib-bearing vertebra (T12) nor
the sacrum (S1) is in view, so that the levels could not be counted at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from l3edge import agreement
from l3edge.ladder import Ladder, fit_ladder
from l3edge.metadata import ModelMetadata
from l3edge.numeric import median
from l3edge.preprocess import RowGrid, normalize
from l3edge.sliding import RunFn, predict_images

RefineFn = Callable[[list[float]], list[float]]
"""Coarse patient z of several levels -> refined z (unchanged where the refiner does not agree)."""
CONFIDENCE_VERSION = 3
"""Version of the confidence formula; a model whose metadata ``extra["confidence"]`` equals it had its
``review_below`` chosen for this formula (``tools/export.py`` writes it). Version 3: the same factors as 2,
on answers refined to a fixed point (``l3edge.refine``), which changes the crop shifts they see."""
REVIEW_BELOW = 0.7284
"""The runtime's review threshold for models whose ``review_below`` was chosen for another confidence
formula (chosen on the validation phantoms with model 0.3.0: models/README.md, "Review threshold")."""
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
    cut: str | None = None
    """``head`` or ``foot``: the model placed the level there but that end of the scan cuts its body (reported
    not found)."""
    crop_shift_pitch: float = math.nan
    """Largest shift, in pitches, of the answer on the scan cropped at either end (``l3edge.agreement``; inf:
    a crop lost the level; NaN: no crop kept it)."""

    @property
    def crop_disagrees(self) -> bool:
        return self.crop_shift_pitch > agreement.LEVEL_SHIFT


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
    counted: bool = True
    """The lowest rib-bearing vertebra (T12) or the sacrum (S1) is in view, so the levels could be counted
    (always true for a single-level model, which cannot tell)."""

    def review(self, level: str, review_below: float) -> bool:
        lv = self.levels[level]
        if not lv.found:
            return False
        lumbar = level.startswith("L")
        return (
            lv.confidence < review_below
            or lv.source == "ladder"
            or (lumbar and self.counts_agree is False)
            or lv.crop_disagrees
            or not self.counted
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
        if lv is not None and lv.cut is not None:
            out.append(f"{level} is cut at the {lv.cut} end of the scan; reported not found")
        if lv is not None and lv.found and lv.crop_disagrees:
            what = "loses it" if math.isinf(lv.crop_shift_pitch) else "puts it on another vertebra"
            out.append(
                f"{level} is unstable: the scan cropped by {agreement.CROP_MM:.0f} mm at one end {what}"
            )
        if not self.counted:
            out.append(
                "neither the lowest rib-bearing vertebra (T12) nor the sacrum (S1) is in view: the vertebrae "
                "could not be counted from either end, so the level's name is a guess"
            )
        return out


def _level_preds(preds: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Model outputs -> [N, 2 L] (offsets of ``meta.model_levels``, then their logits)."""
    idx = [meta.channels_of(m) for m in meta.model_levels]
    cols = [o for o, _ in idx] + [p for _, p in idx]
    if preds.shape[0] == 0:
        return np.zeros((0, len(cols)), dtype=np.float32)
    return preds[:, cols]


def _inside(z: float, z_slices: np.ndarray, default_half_mm: float) -> tuple[bool, int]:
    half = median(np.abs(np.diff(z_slices))) / 2 if z_slices.size > 1 else default_half_mm
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
    crops: bool = True,
) -> Placement:
    """Every level of ``meta``'s model on one scan (see the module docstring).

    Args: run: the model. channels: normalised model-space image [C, rows, W]. grid: its RowGrid. meta: the
    model's metadata. stride / output_stride: window stride and strip mode (None: per window). z_slices:
    patient z of the scan's slices, superior first. refine: refines coarse z's (None: no refiner). mirror:
    also run the mirrored image. crops: also place the levels on the image cropped at each end
    (``l3edge.agreement``; not mirrored).
    """
    sp = meta.space
    h, thr, mm = sp.window_height_px, meta.presence_threshold, sp.mm_per_px
    levels = meta.model_levels
    zs = np.asarray(z_slices, dtype=np.float64)
    t0 = time.perf_counter()
    images = [channels, np.ascontiguousarray(channels[..., ::-1])] if mirror else [channels]
    fill = normalize(np.full((1, 1), sp.fill_hu), sp)[:, 0, 0]
    cropped = agreement.crop_images(channels, grid, zs, fill) if crops else {}
    images += list(cropped.values())
    tops, outs = predict_images(run, images, h, stride, output_stride)  # one batch: MIP, mirror, crops
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
    groups = {"": {m: float(np.asarray(grid.row_to_z(f.row))) for m, f in lad.levels.items() if f.found}}
    groups["sacrum"] = {m: float(np.asarray(grid.row_to_z(r))) for m, r in lad.sacrum_count_rows.items()}
    kept = {
        end: [m for m, z in groups[""].items() if agreement.crop_keeps(end, z, zs, lad.pitch_mm(m, mm))]
        for end in cropped
    }
    for end, out_c in zip(cropped, outs[len(images) - len(cropped) :], strict=True):
        lad_c = fit_ladder(tops, _level_preds(out_c, meta), levels, h, thr, mm)
        found = {m: lad_c.levels[m] for m in kept[end] if lad_c.levels[m].found}
        groups[end] = {m: float(np.asarray(grid.row_to_z(f.row))) for m, f in found.items()}
    t2 = time.perf_counter()
    if refine is not None:
        groups = _refine_groups(refine, groups)
    t3 = time.perf_counter()
    z_coarse, sacrum = groups[""], groups["sacrum"]
    out = {}
    multi = len(levels) > 1
    both_ends = all(m in z_coarse and zs.min() <= z_coarse[m] <= zs.max() for m in ("T12", "S1"))
    counted = not multi or any(m in z_coarse and zs.min() <= z_coarse[m] <= zs.max() for m in ("T12", "S1"))
    for m, f in lad.levels.items():
        conf = _confidence(lad, m, multi)
        if multi and m.startswith("L") and not both_ends:
            conf *= ONE_COUNT
        if m not in z_coarse:
            out[m] = PlacedLevel(
                m,
                False,
                None,
                None,
                0.0,
                f.presence,
                f.ramp_r,
                f.source,
                cut=_cut_by_ladder(lad, m, grid, zs, mm),
            )
            continue
        z = z_coarse[m]
        edge = min(z - zs.min(), zs.max() - z) if zs.size else EDGE_MM
        conf *= float(np.clip(0.5 + 0.5 * edge / EDGE_MM, 0.5, 1.0))
        pitch = lad.pitch_mm(m, mm)
        crop = agreement.crop_shift(z, [groups[e].get(m) for e in cropped if m in kept[e]], pitch)
        conf *= agreement.crop_factor(crop)
        inside, row = _inside(z, zs, mm / 2)
        cut = agreement.cut_end(z, zs, pitch) if inside else None
        if not inside or cut is not None:
            out[m] = PlacedLevel(
                m, False, None, None, conf, f.presence, f.ramp_r, f.source, not inside, cut=cut
            )
            continue
        out[m] = PlacedLevel(
            m, True, z, row, conf, f.presence, f.ramp_r, f.source, False, shift.get(m, math.nan), None, crop
        )
    timings = {"cnn": _ms(t1 - t0), "postprocess": _ms(t2 - t1 + time.perf_counter() - t3)}
    if refine is not None:
        timings["refine"] = _ms(t3 - t2)
    return Placement(out, lad.counts_agree, lad.extra_segments, sacrum, timings, counted)


def _cut_by_ladder(lad: Ladder, name: str, grid: RowGrid, zs: np.ndarray, mm: float) -> str | None:
    """The end of the scan that cuts a level the model did not find, where the ladder of the levels it found
    puts that level's body across the end (a pelvis CT that starts inside L3 shows half of it); else None."""
    row = lad.levels[name].ladder_row
    if not math.isfinite(row):
        return None
    return agreement.cut_end(float(np.asarray(grid.row_to_z(row))), zs, lad.pitch_mm(name, mm))


def _refine_groups(refine: RefineFn, groups: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Every coarse z of every group through the refiner in one call."""
    keys = [(g, m) for g, zs in groups.items() for m in zs]
    if not keys:
        return groups
    refined = refine([groups[g][m] for g, m in keys])
    out: dict[str, dict[str, float]] = {g: {} for g in groups}
    for (g, m), z in zip(keys, refined, strict=True):
        out[g][m] = z
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def review_below(meta: ModelMetadata) -> float:
    """The review threshold for ``meta``'s model: its own when chosen for this confidence formula, else the
    runtime's ``REVIEW_BELOW``."""
    return meta.review_below if meta.extra.get("confidence") == CONFIDENCE_VERSION else REVIEW_BELOW


def _confidence(lad: Ladder, name: str, multi: bool) -> float:
    f = lad.levels[name]
    c = f.presence * max(f.ramp_r, 0.0)
    if multi:
        if f.source == "ladder":
            c = max(c, 0.5) * INTERPOLATED
        elif math.isfinite(f.off_ladder_pitch):
            c *= math.exp(-0.5 * (f.off_ladder_pitch / LADDER_SD_PITCH) ** 2)
        else:
            c *= NO_LADDER
        if name.startswith("L") and lad.counts_agree is False:
            c *= COUNTS_DISAGREE
    return float(np.clip(c, 0.0, 1.0))
