"""One scan, answered: pick the candidate series that shows the level, or answer for each; QA and export.

A DICOM study may hold several axial CT series (``dicom_choice``). :func:`predict_scan` reads them in
preference order, answers each with ``l3edge.answer.locate`` (milliseconds: reading is the cost, and each
candidate is read once) and keeps the one ``dicom_choice.choose`` picks; :func:`predict_each` answers for
every candidate (``all_series``). Both write the QA picture and the export of the answer only
(``l3edge.attach``), from the answer already computed and one slice reader per candidate.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from l3edge.answer import Answer, Engine, locate, with_total
from l3edge.attach import with_export, with_qa
from l3edge.dicom_choice import choose, explain
from l3edge.errors import InputError
from l3edge.options import PathLike, PredictOptions
from l3edge.result import L3Result
from l3edge.scan import Scan

log = logging.getLogger(__name__)


def _with_reading(result: L3Result, read_ms: float) -> L3Result:
    """The result with ``read_mip`` set to all the reading its answer took (header pass + candidates)."""
    t = {k: round(v, 3) for k, v in result.timings_ms.items()}
    t["read_mip"] = round(read_ms, 3)
    return replace(result, timings_ms=with_total(t))


def _slug(label: str) -> str:
    """A candidate's label as a folder name: ``<uid>`` or ``<uid>_acquisition_2``."""
    return label.replace(" (", "_").replace(")", "").replace(" ", "_")


def _describe(scan: Scan, i: int) -> str:
    return f"{scan.labels[i]}, {scan.described[i]}"


def _answer(
    engine: Engine, scan: Scan, i: int, path: str, qa_dir: PathLike | None = None, axial_each: int = 0
) -> Answer:
    """Candidate ``i`` answered (read on first use), with its QA picture when ``qa_dir`` is given."""
    proj = scan.projection(i)
    answer = locate(engine, proj, path, round(float(sum(proj.timings_ms.values())), 3))
    return with_qa(answer, proj, qa_dir, scan.slices(i), axial_each) if qa_dir is not None else answer


def predict_scan(engine: Engine, scan: Scan, path: str, options: PredictOptions) -> L3Result:
    """The answer for ``scan``: its only candidate, or the one that shows the level (default L3) best (see
    ``dicom_choice``).

    Raises:
        InputError: no candidate can be read.
    """
    n = scan.n_candidates
    read_ms = scan.header_ms
    if n == 1:
        w = 0
        answer = _answer(engine, scan, 0, path, options.qa_dir, options.qa_axial)
        result = answer.result
        slices = scan.slices(0)
        if slices is not None and slices.has_series_choice:
            how = "forced with series_uid (--series)" if scan.forced else "the only candidate series"
            result = replace(result, series_choice=f"{how}: {_describe(scan, 0)}")
        read_ms += scan.projection(0).timings_ms.get("read_mip", 0.0)
    else:
        answers: dict[int, Answer] = {}

        def evaluate(i: int) -> L3Result:
            nonlocal read_ms
            answers[i] = _answer(engine, scan, i, path)
            read_ms += scan.projection(i).timings_ms.get("read_mip", 0.0)
            r = answers[i].result
            log.info(
                "%s: candidate %s: found=%s confidence=%.2f", path, scan.labels[i], r.found, r.confidence
            )
            return r

        choice = choose(n, evaluate)
        w = choice.index
        why, others = explain(choice, scan.labels, [scan.described[i] for i in range(n)])
        won = answers[w]
        if options.qa_dir is not None:  # the picture of the answer only, from the answer already computed
            won = with_qa(won, scan.projection(w), options.qa_dir, scan.slices(w), options.qa_axial)
        result = won.result
        prefix = "forced series split by acquisition; " if scan.forced else ""
        result = replace(
            result,
            series_choice=f"{prefix}{scan.labels[w]}: {why}",
            warnings=(*result.warnings, *others),
        )
        log.info("%s: picked %s out of %d candidate series", path, scan.labels[w], n)
    result = _with_reading(result, read_ms)
    return with_export(
        result, scan.projection(w), options.export_dir, options.export_neighbours, scan.slices(w)
    )


def predict_each(engine: Engine, scan: Scan, path: str, options: PredictOptions) -> list[L3Result]:
    """One result per candidate series (``all_series``); a candidate that cannot be read gets a result
    with its ``error`` (and its SeriesInstanceUID), the others are still answered."""
    n = scan.n_candidates
    out: list[L3Result] = []
    for i in range(n):
        label = scan.labels[i]
        how = f"--series all: candidate {i + 1} of {n}: {_describe(scan, i)}"
        try:
            proj = scan.projection(i)
        except InputError as exc:
            failed = L3Result.failure(path, " ".join(str(exc).split()), engine.model_info, engine.level)
            uid = label.split(" ")[0]
            out.append(replace(failed, series_instance_uid=uid, series_choice=how))
            continue
        sub = _slug(label) if n > 1 else None  # QA pictures and exports: one folder per candidate
        qa = Path(options.qa_dir) / sub if options.qa_dir is not None and sub else options.qa_dir
        r = replace(_answer(engine, scan, i, path, qa, options.qa_axial).result, series_choice=how)
        read_ms = proj.timings_ms.get("read_mip", 0.0) + (scan.header_ms if i == 0 else 0.0)
        r = _with_reading(r, read_ms)
        out.append(with_export(r, proj, options.export_dir, options.export_neighbours, scan.slices(i), sub))
    return out
