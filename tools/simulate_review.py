"""A perfect reviewer, SIMULATED from phantom truth: the review page's ``corrections.csv`` for a results file
of ``l3edge predict`` over phantom series written by ``l3edge phantom`` (each folder holds its truth.json).

    python -m tools.simulate_review results.jsonl --out corrections.csv [--level L3] [--reviewer sim]

No person looks at anything: for each scan of the results (the row the page would show) the decision is the
one a careful reviewer would make from the phantom's known anatomy, for the one level given:

- the level is not in the scan (truth): ``reject``;
- the model's pick lies inside the level's vertebral body (truth endplates): ``accept`` it;
- otherwise (picked outside the body, or not found while the level is in view): ``correct`` to the slice
  nearest the truth centre, with its slice index and SOPInstanceUID from the QA geometry (``predict --qa``),
  as a click on the page gives.

The file has the page's columns and its ``results`` key (``l3edge.review.results_key``), so
``l3edge export`` and ``tools.build_cache --results --corrections`` read it as they read the page's. It is for
measuring the review-to-retraining path on phantoms (models/README.md); it says nothing about real reviewers.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from l3edge.corrections import COLUMNS
from l3edge.errors import InputError, L3EdgeError
from l3edge.qa import geometry_path
from l3edge.report import latest, qa_file, read_results
from l3edge.review import level_fields, results_key
from tools.data import TRUTH_NAME
from tools.truth import label_from_truth, vertebra_bounds


def _geometry(d: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    png = qa_file(d, results_dir)
    if png is None:
        raise InputError(f"{d['path']}: no QA picture to take the slice from: run predict with --qa DIR")
    return dict(json.loads(geometry_path(png).read_text(encoding="utf-8")))


def decide(d: dict[str, Any], truth: dict[str, Any], level: str, results_dir: Path) -> dict[str, Any]:
    """The decision on one result row (the page's fields: decision, z_mm, slice_index, sop_instance_uid)."""
    g = _geometry(d, results_dir)
    z_true, in_view = label_from_truth(truth, level, g["z_mm"])
    if not in_view:
        return {"decision": "reject", "z_mm": "", "slice_index": "", "sop_instance_uid": ""}
    pick = level_fields(d).get(level)
    bounds = vertebra_bounds(truth.get("vertebrae"), level)
    if pick is not None and bounds is not None:
        lo, hi = sorted(bounds[:2])
        if lo <= float(pick["z_mm"]) <= hi:
            return {"decision": "accept", **{k: pick[k] for k in ("z_mm", "slice_index", "sop_instance_uid")}}
    row = min(range(len(g["z_mm"])), key=lambda r: abs(g["z_mm"][r] - z_true))
    uid = g["sop_instance_uid"][row] or ""
    return {
        "decision": "correct",
        "z_mm": g["z_mm"][row],
        "slice_index": g["slice_index"][row],
        "sop_instance_uid": uid,
    }


def simulate(results: Path, out: Path, level: str = "L3", reviewer: str = "sim") -> dict[str, int]:
    """Write the simulated ``corrections.csv`` of ``results`` to ``out``; returns the count per decision.

    Raises:
        InputError: a scan without truth.json, or without its QA picture.
    """
    rows = latest(read_results(results))
    key = results_key(results.name, rows)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    counts = {"accept": 0, "correct": 0, "reject": 0}
    lines = []
    for d in sorted(rows, key=lambda d: str(d["path"])):
        if d["error"] is not None:
            continue  # a scan that failed has nothing to decide on the page either
        scan = Path(str(d["path"]))
        truth_file = next(
            (f for f in (scan / TRUTH_NAME, results.parent / scan / TRUTH_NAME) if f.is_file()),
            scan / TRUTH_NAME,
        )  # a relative path: from here, else from the results file's folder
        if not truth_file.is_file():
            raise InputError(
                f"{d['path']}: no {TRUTH_NAME}: only phantom series can be reviewed by simulation"
            )
        dec = decide(d, json.loads(truth_file.read_text(encoding="utf-8")), level, results.parent)
        counts[dec["decision"]] += 1
        base = {"path": d["path"], "series_instance_uid": d.get("series_instance_uid") or "", "level": level}
        lines.append({**base, **dec, "reviewer": reviewer, "time": now, "results": key})
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[*COLUMNS, "results"])
        w.writeheader()
        w.writerows(lines)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.simulate_review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("results", type=Path, help="results of l3edge predict --qa over phantom series")
    ap.add_argument("--out", type=Path, required=True, help="corrections.csv to write")
    ap.add_argument("--level", default="L3", help="the level decided (default L3)")
    ap.add_argument("--reviewer", default="sim", help="the reviewer column (default sim)")
    a = ap.parse_args(argv)
    try:
        counts = simulate(a.results, a.out, a.level.upper(), a.reviewer)
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
