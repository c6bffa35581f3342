"""The side outputs of an answer: the QA picture (``l3edge.qa``) and the export of its slice
(``l3edge.export``), both reading the scan's slices through one ``SliceReader`` (``l3edge.slices``), so the
axial slice at the answer is read once for both. A problem with either is a warning on the result, never a
failed scan.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from l3edge.answer import Answer, ms_since, with_total
from l3edge.errors import InputError
from l3edge.result import L3Result
from l3edge.series import Projection
from l3edge.slices import SliceReader, slice_reader

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def reader_of(projection: Projection) -> SliceReader | None:
    """The slice reader of ``projection``'s series (None for a projection without one)."""
    return slice_reader(projection.series) if projection.series is not None else None


def with_qa(
    answer: Answer,
    projection: Projection,
    qa_dir: PathLike,
    slices: SliceReader | None,
    axial_each: int = 0,
) -> Answer:
    """The answer with its QA picture written into ``qa_dir`` (``qa_path`` set, ``timings_ms["qa"]``
    added); with ``axial_each`` > 0 also its axial thumbnails (``l3edge.qa_axial``;
    ``timings_ms["qa_axial"]``: reading the slices and drawing the strip)."""
    from l3edge import qa

    t = time.perf_counter()
    result = answer.result
    axial = None
    warnings = list(result.warnings)
    if answer.row is not None and slices is not None:
        try:
            axial = slices.axial_for_qa(answer.row)
        except InputError as exc:
            warnings.append(f"QA picture without the axial slice: {exc}")
    strip, t_strip, strip_ms = None, time.perf_counter(), None
    if axial_each > 0 and slices is not None:
        from l3edge.qa_axial import read_strip

        try:
            strip = read_strip(projection, result, slices, axial_each)
        except InputError as exc:
            warnings.append(f"QA axial thumbnails not written: {exc}")
        strip_ms = ms_since(t_strip)
    out = qa.write_qa(Path(qa_dir), result.path, projection, result, axial, strip)
    timings = dict(result.timings_ms)
    timings["qa"] = round(ms_since(t) - (strip_ms or 0.0), 3)
    if strip_ms is not None:
        timings["qa_axial"] = strip_ms  # reading the slices and drawing the strip; its JPEG is in "qa"
    result = replace(result, qa_path=str(out), warnings=tuple(warnings), timings_ms=with_total(timings))
    return replace(answer, result=result)


def with_export(
    result: L3Result,
    projection: Projection,
    export_dir: PathLike | None,
    neighbours: int,
    slices: SliceReader | None,
    subfolder: str | None = None,
) -> L3Result:
    """The result with its slice exported into ``export_dir`` (``export_path`` set), or a warning saying why
    not; unchanged without ``export_dir`` or when the level was not found."""
    if export_dir is None or not result.found or projection.series is None:
        return result
    from l3edge.export import export_slice

    try:
        out = export_slice(
            result, projection.series, export_dir, neighbours, subfolder=subfolder, slices=slices
        )
    except (InputError, OSError) as exc:
        text = " ".join(str(exc).split())
        log.warning("%s: export failed: %s", result.path, text)
        return replace(result, warnings=(*result.warnings, f"export failed, nothing partial left: {text}"))
    return replace(result, export_path=str(out) if out is not None else None)
