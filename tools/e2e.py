"""End to end: the runtime itself (``L3Locator.predict``: reader, MIP, model, refiner) on phantom series.

    l3edge phantom runs/e2e/p9000 --seed 9000          # DICOM series with truth.json (never used in training)
    python -m tools.e2e runs/e2e [--model M.xml] [--no-refine] [--json report.json]

Every folder under the given ones that holds a ``truth.json`` is one scan. The report has the fields and the
summary of ``tools.evaluate`` (errors in mm against the L3 body centre, in slices against the nearest slice,
inside the L3 body, wrongly found / not found), but the numbers come from the same code path as
``l3edge predict``, not from a cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import L3EdgeError, UsageError
from l3edge.locator import L3Locator
from tools.data import TRUTH_NAME, label_from_truth, truth_slices, vertebra_bounds
from tools.evaluate import report
from tools.levels import rib_relative
from tools.summary import markdown_table, summarize, table_row


def scan_folders(roots: list[Path]) -> list[Path]:
    """Folders holding a truth.json under ``roots`` (sorted)."""
    found = {p.parent for r in roots for p in ([r / TRUTH_NAME] if (r / TRUTH_NAME).is_file() else [])}
    found |= {p.parent for r in roots for p in r.rglob(TRUTH_NAME)}
    return sorted(found)


def evaluate_folder(locator: L3Locator, folder: Path) -> dict[str, Any]:
    """One scan: the runtime's answer against the phantom's truth (the record format of tools.evaluate)."""
    truth = json.loads((folder / TRUTH_NAME).read_text())
    nifti = sorted(folder.glob("*.nii.gz")) + sorted(folder.glob("*.nii"))
    r = locator.predict(nifti[0] if nifti else folder)
    label_z, in_view = label_from_truth(truth, locator.metadata.level, np.zeros(0))
    z_sl = truth_slices(truth)
    if z_sl is None:
        raise UsageError(f"{folder / TRUTH_NAME} does not describe its slices (scan_z_range, n_slices)")
    truth_slice = int(np.argmin(np.abs(z_sl - label_z))) if in_view else None
    pred_slice = int(np.argmin(np.abs(z_sl - r.z_mm))) if r.found and r.z_mm is not None else None
    rec: dict[str, Any] = {
        "id": folder.name,
        "in_view": in_view,
        "found": r.found,
        "label_z_mm": label_z if in_view else None,
        "pred_z_mm": r.z_mm,
        "pred_slice": pred_slice,
        "truth_slice": truth_slice,
        "error_slices": None,
        "error_mm": None,
        "in_body": None,
        "confidence": r.confidence,
        "presence": r.presence,
        "review": r.review,
        "ms": r.timings_ms.get("total", 0.0),
        "region": truth.get("region"),
        "variants": truth.get("variants") or [],
    }
    if in_view and pred_slice is not None and truth_slice is not None and r.z_mm is not None:
        rec["error_slices"] = abs(pred_slice - truth_slice)
        rec["error_mm"] = round(abs(r.z_mm - label_z), 3)
    b = vertebra_bounds(truth.get("vertebrae"), locator.metadata.level)
    if in_view and b is not None:
        top, bottom = sorted(b[:2])
        rec["in_body"] = bool(r.found and r.z_mm is not None and top <= r.z_mm <= bottom)
    rec["outcome"] = (
        "hit" if in_view and r.found else "missed" if in_view else "false_found" if r.found else "true_absent"
    )
    if r.levels or len(locator.metadata.model_levels) > 1:
        rec["levels"] = _levels(truth, r.levels, locator.metadata.model_levels, z_sl)
    return rec


def _levels(
    truth: dict[str, Any], found: dict[str, Any], levels: tuple[str, ...], z_sl: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Every level of the model against the truth (thoracic names counted up from the lowest rib)."""
    verts = rib_relative(truth.get("vertebrae") or {})
    lo, hi = float(z_sl.min()), float(z_sl.max())
    out = {}
    for m in levels:
        v = verts.get(m)
        in_view = bool(v is not None and lo <= float(v["z_center"]) <= hi)
        lv = found.get(m)  # a LevelResult (or a dict): both answer ["z_mm"]
        z = float(lv["z_mm"]) if lv is not None and lv["z_mm"] is not None else None
        row: dict[str, Any] = {"in_view": in_view, "found": z is not None, "error_mm": None, "in_body": None}
        if in_view and v is not None and z is not None:
            row["error_mm"] = round(abs(z - float(v["z_center"])), 3)
            top, bottom = sorted((float(v["z_top"]), float(v["z_bottom"])))
            row["in_body"] = bool(top <= z <= bottom)
        elif in_view:
            row["in_body"] = False
        out[m] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.e2e", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("roots", nargs="+", type=Path, help="phantom folders (truth.json) or folders of them")
    ap.add_argument("--model", help="IR (default: L3EDGE_MODEL, then the bundled model)")
    ap.add_argument("--no-refine", action="store_true", help="skip the model's refiner")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="write the full report (per scan too) here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    folders = scan_folders(a.roots)
    if not folders:
        print(f"error: no {TRUTH_NAME} under {', '.join(map(str, a.roots))}", file=sys.stderr)
        return 2
    try:
        locator = L3Locator.load(a.model, threads=a.threads, refine=not a.no_refine)
        results = []
        for i, f in enumerate(folders, 1):
            results.append(evaluate_folder(locator, f))
            print(f"[{i}/{len(folders)}] {f}", file=sys.stderr)
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    meta = locator.metadata
    name = f"{meta.name} (runtime{', refined' if locator.refiner is not None else ''})"
    rep = {"scans": results, "summary": summarize(results)}
    rep["model"] = {"name": meta.name, "refiner": locator.refiner is not None, "stride": locator.stride}
    rep["table"] = markdown_table([table_row(name, rep["summary"], None)])
    report(rep, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
