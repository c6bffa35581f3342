"""Reviewed picks: ``corrections.csv`` from the review page, checked against its results file, and the
export of the accepted and corrected slices.

The file has one row per scan and level decided: ``path, series_instance_uid, level, decision, z_mm,
slice_index, sop_instance_uid, reviewer, time`` (and ``results``, the key of the results file the page was
made from; see ``l3edge.review.results_key``). ``decision`` is ``accept`` (the model's pick is right),
``correct`` (the level is at the row given) or ``reject`` (the level is not in the scan, or the scan is
unusable). Every row is checked before anything is written: a file for another results file, a path not in
the results, a level the model does not place, a slice or z outside the scan each stop with one line naming
the row. A scan and level decided twice keeps the later row, and says so (:attr:`Corrections.notes`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from l3edge.errors import InputError, UsageError
from l3edge.report import latest, qa_file, read_results
from l3edge.result import L3Result
from l3edge.review import key_hash, model_levels, results_key
from l3edge.series import Projection, SeriesInfo

COLUMNS = (
    "path",
    "series_instance_uid",
    "level",
    "decision",
    "z_mm",
    "slice_index",
    "sop_instance_uid",
    "reviewer",
    "time",
)
DECISIONS = ("accept", "correct", "reject")
MANIFEST = "export.csv"
"""The list of exported slices written into the export folder last."""


@dataclass(frozen=True)
class Decision:
    """One row of ``corrections.csv``, checked against the results file."""

    line: int
    path: str
    series_instance_uid: str | None
    level: str
    decision: str
    z_mm: float | None
    slice_index: int | None
    sop_instance_uid: str | None
    reviewer: str
    time: str
    own_level: bool
    """``level`` is the level the scan's result describes (exported without a level subfolder)."""
    several_series: bool
    """The results hold several series of this path (each exported into a folder of its own)."""


@dataclass(frozen=True)
class Corrections:
    decisions: list[Decision]
    """The rows in file order, the later of two rows for one scan and level only."""
    notes: list[str]
    """Rows replaced by a later one."""
    undecided: int
    """Scans of the results file (that did not fail) without any decision."""


def _num(text: str, kind: Callable[[str], Any], where: str, name: str) -> Any:
    if not text:
        return None
    try:
        v = kind(text)
    except ValueError:
        raise InputError(f"{where}: {name} {text!r} is not a number") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise InputError(f"{where}: {name} must be finite")
    return v


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
            header = [h.strip() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise InputError(f"{csv_path}: cannot read the corrections file: {why}") from exc
    missing = [c for c in COLUMNS[:4] if c not in header]
    if missing:
        raise InputError(f"{csv_path}: not a corrections file (no column {', '.join(missing)})")
    return rows


def read_corrections(csv_path: str | os.PathLike[str], results: str | os.PathLike[str]) -> Corrections:
    """The decisions of ``csv_path`` for the scans of the results file ``results``.

    Raises:
        InputError: either file cannot be read, or a row does not fit the results (one line naming it).
    """
    src, res = Path(csv_path), Path(results)
    rows = latest(read_results(res))
    key = results_key(res.name, rows)
    levels = model_levels(rows)
    by_path: dict[str, dict[str, dict[str, Any]]] = {}
    for d in rows:
        if d["error"] is None:
            by_path.setdefault(str(d["path"]), {})[str(d.get("series_instance_uid") or "")] = d
    lines = _read_rows(src)
    made_for = {r.get("results", "") for r in lines} - {""}
    other = [k for k in made_for if key_hash(k) != key_hash(key)]
    if other:
        raise InputError(
            f"{src}: made for another results file ({other[0]}), not {res.name} ({key}); give the results "
            "file the review page was written from"
        )
    if lines and not any(r.get("path", "") in by_path for r in lines):
        raise InputError(f"{src}: none of its {len(lines)} rows names a scan of {res}: another results file?")
    kept: dict[tuple[str, str, str], Decision] = {}
    notes: list[str] = []
    for n, r in enumerate(lines, start=2):
        where = f"{src}: line {n}"
        path, uid = r.get("path", ""), r.get("series_instance_uid", "")
        series = by_path.get(path)
        if series is None:
            raise InputError(f"{where}: {path or '(empty path)'} is not a scan of {res} (or it failed there)")
        if uid not in series and not (uid == "" and len(series) == 1):
            raise InputError(f"{where}: {path} has no series {uid or '(none given)'} in {res}")
        d = series[uid] if uid in series else next(iter(series.values()))
        level = r.get("level", "").upper()
        if level not in levels:
            raise InputError(
                f"{where}: level {level or '(empty)'!r} is not one the model places ({', '.join(levels)})"
            )
        choice = r.get("decision", "").lower()
        if choice not in DECISIONS:
            raise InputError(f"{where}: decision {choice!r} is not one of {', '.join(DECISIONS)}")
        z = _num(r.get("z_mm", ""), float, where, "z_mm")
        k = _num(r.get("slice_index", ""), int, where, "slice_index")
        sop = r.get("sop_instance_uid", "") or None
        if choice != "reject" and z is None and k is None and sop is None:
            raise InputError(f"{where}: an {choice} row needs z_mm, slice_index or sop_instance_uid")
        if choice == "reject":
            z = k = sop = None
        _check_extent(d, res.parent, z, k, where)
        ident = (path, str(d.get("series_instance_uid") or ""), level)
        if ident in kept:
            notes.append(
                f"{where} decides {path} {level} again (line {kept[ident].line}): the later row is used"
            )
            del kept[ident]  # keeps file order of the rows used
        kept[ident] = Decision(
            n,
            path,
            d.get("series_instance_uid") or None,
            level,
            choice,
            z,
            k,
            sop,
            r.get("reviewer", ""),
            r.get("time", ""),
            own_level=level == str(d.get("level") or "L3").upper(),
            several_series=len(series) > 1,
        )
    decided = {(p, s) for p, s, _ in kept}
    undecided = sum(
        (str(d["path"]), str(d.get("series_instance_uid") or "")) not in decided
        for d in rows
        if d["error"] is None
    )
    return Corrections(list(kept.values()), notes, undecided)


def _check_z(z: float | None, zs: list[float], where: str) -> float:
    """Check that ``z`` (None: nothing to check) lies in the scan of slices at ``zs``; returns their pitch."""
    pitch = abs(zs[0] - zs[-1]) / max(len(zs) - 1, 1)
    lo, hi = min(zs) - pitch / 2, max(zs) + pitch / 2
    if z is not None and not lo <= z <= hi:
        raise InputError(f"{where}: z = {z:.1f} mm is outside the scan ({lo:.1f} to {hi:.1f} mm)")
    return pitch


def _check_extent(d: dict[str, Any], results_dir: Path, z: float | None, k: int | None, where: str) -> None:
    """Check a row against the scan's QA geometry (l3edge.qa.geometry) when the results have one: the scan
    need not be read again to find a z outside it or an unknown slice."""
    png = qa_file(d, results_dir)
    if png is None or (z is None and k is None):
        return
    try:
        g = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
        zs, index = [float(v) for v in g["z_mm"]], [int(v) for v in g["slice_index"]]
    except (OSError, ValueError, KeyError, TypeError):
        return
    _check_z(z, zs, where)
    if k is not None and k not in index:
        raise InputError(f"{where}: slice_index {k} is not among the {len(index)} slices of the scan")


def resolve_row(dec: Decision, projection: Projection, where: str) -> int:
    """The MIP row of a decision in the scan read again (by slice index, else UID, else nearest z).

    Raises:
        InputError: the slice is not in the scan, its z is outside the scan, or the fields disagree.
    """
    series = projection.series
    z = [float(v) for v in projection.z_mm]
    pitch = _check_z(dec.z_mm, z, where)
    index = list(series.slice_index) if series is not None else []
    uids = list(series.sop_instance_uids) if series is not None else []
    if dec.slice_index is not None:
        if dec.slice_index not in index:
            raise InputError(
                f"{where}: slice_index {dec.slice_index} is not among the {len(z)} slices of the scan"
            )
        row = index.index(dec.slice_index)
    elif dec.sop_instance_uid is not None:
        if dec.sop_instance_uid not in uids:
            raise InputError(f"{where}: the SOPInstanceUID is not among the {len(z)} slices of the scan")
        row = uids.index(dec.sop_instance_uid)
    else:
        assert dec.z_mm is not None
        row = min(range(len(z)), key=lambda i: abs(z[i] - dec.z_mm))  # type: ignore[operator]
    if dec.sop_instance_uid is not None and uids and uids[row] not in (None, dec.sop_instance_uid):
        raise InputError(
            f"{where}: slice_index and sop_instance_uid name different slices (the scan changed?)"
        )
    if dec.z_mm is not None and abs(z[row] - dec.z_mm) > pitch + 1e-3:
        raise InputError(f"{where}: z = {dec.z_mm:.1f} mm is {abs(z[row] - dec.z_mm):.1f} mm from its slice")
    return row


@dataclass(frozen=True)
class ExportInfo:
    exported: int
    accepted: int
    corrected: int
    rejected: int
    undecided: int
    notes: list[str]
    manifest: Path


def _subfolder(dec: Decision) -> str | None:
    parts = ([dec.series_instance_uid or ""] if dec.several_series else []) + (
        [] if dec.own_level else [dec.level]
    )
    return "_".join(parts) or None


def export_corrections(
    results: str | os.PathLike[str],
    corrections: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    neighbours: int = 0,
    read: Callable[..., Projection] | None = None,
) -> ExportInfo:
    """Export the accepted and corrected slices as ``predict --export`` does (l3edge.export.export_slice).

    Every scan with such a decision is read again and every row resolved first; only then is anything
    written, and ``out_dir/export.csv`` (path, series, level, decision, slice_index, file) last.

    Raises:
        InputError: a row does not fit the results or its scan (nothing is written).
        UsageError: ``out_dir`` cannot be written.
    """
    from l3edge.export import export_slice

    if read is None:
        from l3edge.scan import read_projection

        read = read_projection
    corr = read_corrections(corrections, results)
    plan: list[tuple[Decision, SeriesInfo, int]] = []
    seen: dict[tuple[str, str | None], Projection] = {}
    for dec in corr.decisions:
        if dec.decision == "reject":
            continue
        where = f"{corrections}: line {dec.line}"
        ident = (dec.path, dec.series_instance_uid)
        if ident not in seen:
            try:
                proj = read(dec.path, series_uid=dec.series_instance_uid)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
            seen[ident] = replace(proj, mip_hu=proj.mip_hu[:, :1])  # rows and series only: memory stays small
        proj = seen[ident]
        assert proj.series is not None
        plan.append((dec, proj.series, resolve_row(dec, proj, where)))
    seen.clear()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the export folder {out}: {exc.strerror or exc}") from exc
    manifest = [["path", "series_instance_uid", "level", "decision", "slice_index", "file"]]
    for dec, series, row in plan:
        pick = replace(
            L3Result.failure(dec.path, ""),
            error=None,
            found=True,
            slice_index=series.slice_index[row],
            level=dec.level,
        )
        try:
            f = export_slice(pick, series, out, neighbours, subfolder=_subfolder(dec))
        except OSError as exc:
            raise UsageError(f"cannot write into {out}: {exc.strerror or exc}") from exc
        rel = os.path.relpath(f, out) if f is not None else ""
        manifest.append(
            [dec.path, dec.series_instance_uid or "", dec.level, dec.decision, str(pick.slice_index), rel]
        )
    listing = out / MANIFEST
    tmp = out / f".{MANIFEST}.part-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(manifest)
    os.replace(tmp, listing)
    count = {c: sum(d.decision == c for d in corr.decisions) for c in DECISIONS}
    return ExportInfo(
        len(plan), count["accept"], count["correct"], count["reject"], corr.undecided, corr.notes, listing
    )
