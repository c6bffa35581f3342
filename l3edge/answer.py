"""The answer for one projection: model space -> windows through the model (as is and mirrored) -> per-level
ramp fit and ladder (``l3edge.place``) -> refinement (``l3edge.refine``) -> the :class:`L3Result`.

Pure of I/O: the side outputs (QA picture, export) are ``l3edge.attach``; choosing among a study's series is
``l3edge.study``; loading and checking a model is the facade, ``l3edge.locator``, which hands an
:class:`Engine` down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from l3edge.metadata import ModelMetadata
from l3edge.numeric import median
from l3edge.place import PlacedLevel, place_levels, review_below
from l3edge.preprocess import normalize, to_model_space
from l3edge.refine import reach_px, refine_zs
from l3edge.result import L3Result, LevelResult
from l3edge.runtime import OVModel
from l3edge.series import Projection

log = logging.getLogger(__name__)


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def with_total(timings: dict[str, float]) -> dict[str, float]:
    """``timings`` (changed in place) with ``total``, the sum of the other stages."""
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)
    return timings


@dataclass(frozen=True)
class Engine:
    """A loaded model with every choice about how to run it made (``L3Locator.engine``)."""

    model: OVModel
    """The compiled model."""
    refiner: OVModel | None
    """The compiled refiner, or None."""
    mirror: bool
    """Also run the scan mirrored left-right."""
    stride: int
    """Window stride in model pixels (checked against the model)."""
    output_stride: int | None
    """The model's output stride when it runs on the whole strip at once; None: window by window."""
    level: str
    """The level the result describes (one the model places)."""

    @property
    def metadata(self) -> ModelMetadata:
        return self.model.metadata

    @property
    def model_info(self) -> dict[str, str]:
        return {"name": self.metadata.name, "version": self.metadata.version}


@dataclass(frozen=True)
class Answer:
    """A result and where on the projection it lies (what the QA picture needs)."""

    result: L3Result
    row: int | None
    """MIP row (superior first) of the result's level; None when not found."""


def locate(engine: Engine, projection: Projection, path: str, read_ms: float) -> Answer:
    """The answer for ``projection`` (``path``: what the result names; ``read_ms``: its reading time)."""
    meta = engine.metadata
    space = meta.space
    level = engine.level
    timings: dict[str, float] = {"read_mip": read_ms}

    t = time.perf_counter()
    image, grid = to_model_space(projection.mip_hu, projection.z_mm, projection.col_spacing_mm, space)
    channels = normalize(image, space)
    timings["preprocess"] = ms_since(t)

    refiner = engine.refiner
    placed = place_levels(
        engine.model.run,
        channels,
        grid,
        meta,
        engine.stride,
        engine.output_stride,
        projection.z_mm,
        (lambda z: refine(refiner, projection, z)) if refiner is not None else None,
        mirror=engine.mirror,
    )
    timings.update(placed.timings_ms)

    t = time.perf_counter()
    series = projection.series
    warnings = list(series.warnings) if series is not None else []
    warnings += placed.warnings(level)
    lv = placed.levels[level]
    levels = {m: level_result(projection, p) for m, p in placed.levels.items() if p.found}
    here = levels.get(level) if lv.found else None
    result = L3Result(
        path=path,
        found=lv.found,
        z_mm=here.z_mm if here else None,
        slice_index=here.slice_index if here else None,
        slice_z_mm=here.slice_z_mm if here else None,
        instance_number=here.instance_number if here else None,
        sop_instance_uid=here.sop_instance_uid if here else None,
        series_instance_uid=series.series_instance_uid if series is not None else None,
        n_slices=projection.n_slices,
        confidence=round(lv.confidence, 4),
        presence=round(lv.presence, 4),
        ramp_r=round(lv.ramp_r, 4),
        timings_ms=timings,
        model=engine.model_info,
        warnings=tuple(warnings),
        level=level,
        levels=levels if len(meta.model_levels) > 1 else {},
        review=placed.review(level, review_below(meta)),
    )
    timings["postprocess"] = round(timings["postprocess"] + ms_since(t), 3)
    with_total(timings)
    log.info(
        "%s: %s found=%s z=%s slice=%s review=%s",
        path,
        level,
        result.found,
        result.z_mm,
        result.slice_index,
        result.review,
    )
    return Answer(result, lv.row if lv.found else None)


def level_result(projection: Projection, p: PlacedLevel) -> LevelResult:
    """z and slice identifiers of a placed level (``p.row`` is a superior-first row of the projection)."""
    assert p.row is not None and p.z_mm is not None
    row = p.row
    series = projection.series
    if series is not None and len(series.slice_index) == projection.n_slices:
        index: int = int(series.slice_index[row])
        number, uid = _at(series.instance_numbers, row), _at(series.sop_instance_uids, row)
    else:
        # An in-memory projection without a series: rows are superior -> inferior, so the
        # z-ascending index of row i is counted from the last row.
        index, number, uid = projection.n_slices - 1 - row, None, None
    return LevelResult(
        z_mm=round(p.z_mm, 3),
        slice_z_mm=round(float(projection.z_mm[row]), 3),
        slice_index=index,
        instance_number=number,
        sop_instance_uid=uid,
        confidence=round(p.confidence, 4),
    )


def refine(refiner: OVModel, projection: Projection, z_mm: list[float]) -> list[float]:
    """The refiner's z for each coarse estimate in ``z_mm`` (unchanged where its windows do not agree)."""
    rmeta = refiner.metadata
    space = rmeta.space
    h = space.window_height_px
    # Only the rows the refiner's windows can reach go to its (finer) model space.
    assert rmeta.refine_band is not None
    reach = (reach_px(h, rmeta.refine_band, rmeta.refine_shifts_px) + 2) * space.mm_per_px
    z = np.asarray(projection.z_mm)
    reach += median(np.abs(np.diff(z))) if z.size > 1 else 0.0  # one slice more each side
    keep = np.flatnonzero((z >= min(z_mm) - reach) & (z <= max(z_mm) + reach))
    if keep.size == 0:
        return list(z_mm)
    rows = slice(int(keep[0]), int(keep[-1]) + 1)
    image, grid = to_model_space(projection.mip_hu[rows], z[rows], projection.col_spacing_mm, space)
    channels = normalize(image, space)
    return refine_zs(refiner.run, channels, grid, list(z_mm), h, rmeta.refine_band, rmeta.refine_shifts_px)


def _at(values: tuple[Any, ...], i: int) -> Any:
    return values[i] if i < len(values) else None
