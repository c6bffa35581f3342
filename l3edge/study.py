"""One scan through the locator: pick the candidate series that shows L3, or answer for each; export it.

A DICOM study may hold several axial CT series (``dicom_choice``). ``predict_scan`` reads them in preference
order, scores each with the locator's ``predict_projection`` (milliseconds: reading is the cost, and each
candidate is read once) and keeps the one ``dicom_choice.choose`` picks; ``predict_each`` answers for every
candidate (``--series all``). Both write the QA picture and the export of the answer only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from l3edge.dicom_choice import choose, explain
from l3edge.errors import InputError
from l3edge.result import L3Result
from l3edge.scan import Scan
from l3edge.series import Projection

if TYPE_CHECKING:
    from l3edge.locator import L3Locator

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _with_reading(result: L3Result, read_ms: float) -> L3Result:
    """The result with ``read_mip`` set to all the reading its answer took (header pass + candidates)."""
    t = {k: round(v, 3) for k, v in result.timings_ms.items()}
    t["read_mip"] = round(read_ms, 3)
    t["total"] = round(sum(v for k, v in t.items() if k != "total"), 3)
    return replace(result, timings_ms=t)


def _export(
    result: L3Result,
    projection: Projection,
    export_dir: PathLike | None,
    neighbours: int,
    subfolder: str | None = None,
) -> L3Result:
    if export_dir is None or not result.found or projection.series is None:
        return result
    from l3edge.export import export_slice

    try:
        out = export_slice(result, projection.series, export_dir, neighbours, subfolder=subfolder)
    except (InputError, OSError) as exc:
        text = " ".join(str(exc).split())
        log.warning("%s: export failed: %s", result.path, text)
        return replace(result, warnings=(*result.warnings, f"export failed, nothing partial left: {text}"))
    return replace(result, export_path=str(out) if out is not None else None)


def _slug(label: str) -> str:
    """A candidate's label as a folder name: ``<uid>`` or ``<uid>_acquisition_2``."""
    return label.replace(" (", "_").replace(")", "").replace(" ", "_")


def _describe(scan: Scan, i: int) -> str:
    return f"{scan.labels[i]}, {scan.described[i]}"


def predict_scan(
    locator: L3Locator,
    scan: Scan,
    path: str,
    stride: int | None = None,
    qa_dir: PathLike | None = None,
    export_dir: PathLike | None = None,
    neighbours: int = 0,
    level: str | None = None,
) -> L3Result:
    """The answer for ``scan``: its only candidate, or the one that shows the level (default L3) best (see
    ``dicom_choice``).

    Raises:
        InputError: no candidate can be read.
    """
    n = scan.n_candidates
    if n == 1:
        proj = scan.projection(0)
        result = locator.predict_projection(proj, stride=stride, qa_dir=qa_dir, path=path, level=level)
        if proj.series is not None and proj.series.source == "dicom":
            how = "forced with series_uid (--series)" if scan.forced else "the only candidate series"
            result = replace(result, series_choice=f"{how}: {_describe(scan, 0)}")
        result = _with_reading(result, scan.header_ms + proj.timings_ms.get("read_mip", 0.0))
        return _export(result, proj, export_dir, neighbours)

    read_ms = scan.header_ms

    def evaluate(i: int) -> L3Result:
        nonlocal read_ms
        proj = scan.projection(i)
        read_ms += proj.timings_ms.get("read_mip", 0.0)
        r = locator.predict_projection(proj, stride=stride, path=path, level=level)
        log.info("%s: candidate %s: found=%s confidence=%.2f", path, scan.labels[i], r.found, r.confidence)
        return r

    choice = choose(n, evaluate)
    w = choice.index
    why, others = explain(choice, scan.labels, [scan.described[i] for i in range(n)])
    proj = scan.projection(w)
    won = choice.outcomes[w]
    assert isinstance(won, L3Result)
    result = won
    if qa_dir is not None:  # the picture of the answer only (the model runs again: milliseconds)
        result = locator.predict_projection(proj, stride=stride, qa_dir=qa_dir, path=path, level=level)
    prefix = "forced series split by acquisition; " if scan.forced else ""
    result = replace(
        result,
        series_choice=f"{prefix}{scan.labels[w]}: {why}",
        warnings=(*result.warnings, *others),
    )
    log.info("%s: picked %s out of %d candidate series", path, scan.labels[w], n)
    return _export(_with_reading(result, read_ms), proj, export_dir, neighbours)


def predict_each(
    locator: L3Locator,
    scan: Scan,
    path: str,
    stride: int | None = None,
    qa_dir: PathLike | None = None,
    export_dir: PathLike | None = None,
    neighbours: int = 0,
    level: str | None = None,
) -> list[L3Result]:
    """One result per candidate series (``--series all``); a candidate that cannot be read gets a result
    with its ``error`` (and its SeriesInstanceUID), the others are still answered."""
    n = scan.n_candidates
    model = {"name": locator.metadata.name, "version": locator.metadata.version}
    out: list[L3Result] = []
    for i in range(n):
        label = scan.labels[i]
        how = f"--series all: candidate {i + 1} of {n}: {_describe(scan, i)}"
        try:
            proj = scan.projection(i)
        except InputError as exc:
            failed = L3Result.failure(
                path, " ".join(str(exc).split()), model, level or locator.metadata.level
            )
            uid = label.split(" ")[0]
            out.append(replace(failed, series_instance_uid=uid, series_choice=how))
            continue
        sub = _slug(label) if n > 1 else None  # QA pictures and exports: one folder per candidate
        qa = Path(qa_dir) / sub if qa_dir is not None and sub else qa_dir
        r = locator.predict_projection(proj, stride=stride, qa_dir=qa, path=path, level=level)
        r = replace(r, series_choice=how)
        read_ms = proj.timings_ms.get("read_mip", 0.0) + (scan.header_ms if i == 0 else 0.0)
        out.append(_export(_with_reading(r, read_ms), proj, export_dir, neighbours, subfolder=sub))
    return out
