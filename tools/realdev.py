"""Real scans with known L3 (``../shared/data/real_dev``, read its README) through the runtime itself.

    python -m tools.realdev [--model M.xml] [--root ../shared/data/real_dev] [--no-refine] [--json out.json]
    python -m tools.realdev --variants /tmp/variants [--model M.xml] --json variants.json

For each scan folder: ``L3Locator.predict`` (the folder's ``series_with_l3`` from truth.json is passed as the
series when the truth names one), then the error against ``l3_centre_z_mm``, inside the L3 body or not, the
confidence and review flag, every level found, and the answer on the left-right mirrored MIP (a stable model
gives the same answer). Scans without L3 must be reported not found.

``--variants DIR`` runs the cropped and thinned variants that ``../shared/tools/stability.py --keep DIR``
wrote (sub-folders ``SCAN__VARIANT``; each takes the truth of ``SCAN``) instead of the scans themselves. Their
rows (``--json``) are the real-looking side of the review threshold's choice (``tools.evaluate
--choose-review-below --real-variants``), as issue 18 asks. These scans are never used for training.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from l3edge.errors import L3EdgeError, UsageError
from l3edge.locator import L3Locator
from l3edge.place import review_below
from l3edge.scan import read_projection

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_dev"


def check(locator: L3Locator, folder: Path, truth: dict[str, Any]) -> dict[str, Any]:
    proj = read_projection(folder, series_uid=truth.get("series_with_l3"))
    r = locator.predict_projection(proj, path=str(folder))
    m = locator.predict_projection(replace(proj, mip_hu=proj.mip_hu[:, ::-1].copy()), path=str(folder))
    row: dict[str, Any] = {
        "scan": folder.name,
        "has_l3": bool(truth.get("has_l3")),
        "found": r.found,
        "z_mm": r.z_mm,
        "confidence": r.confidence,
        "review": r.review,
        "review_other": bool(r.review and r.confidence >= review_below(locator.metadata)),
        "levels": {k: v["z_mm"] for k, v in r.levels.items()},
        "warnings": list(r.warnings),
        "mirrored_z_mm": m.z_mm,
    }
    if truth.get("has_l3"):
        lo, hi = sorted(truth["l3_body_z_mm"])
        c = float(truth["l3_centre_z_mm"])
        row["error_mm"] = None if r.z_mm is None else round(r.z_mm - c, 1)
        row["inside"] = r.z_mm is not None and lo <= r.z_mm <= hi
        row["mirrored_error_mm"] = None if m.z_mm is None else round(m.z_mm - c, 1)
        row["mirrored_inside"] = m.z_mm is not None and lo <= m.z_mm <= hi
    return row


def _line(row: dict[str, Any]) -> str:
    if row["has_l3"]:
        where = (
            "not found"
            if not row["found"]
            else (f"{row['error_mm']:+.1f} mm, {'inside' if row['inside'] else 'OUTSIDE'} the L3 body")
        )
        mirrored = row["mirrored_error_mm"]
        mir = "not found" if mirrored is None else f"{mirrored:+.1f} mm"
        review = ", review" if row["review"] else ""
        return f"{row['scan']}: {where}, confidence {row['confidence']:.2f}{review}; mirrored {mir}"
    return f"{row['scan']}: " + (
        "correctly not found" if not row["found"] else "L3 reported in a scan without L3"
    )


def _variant_dirs(root: Path, truth: dict[str, Any]) -> list[Path]:
    """The sub-folders ``SCAN__VARIANT`` of ``root`` whose SCAN truth.json knows."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name.split("__")[0] in truth)
    if not dirs:
        raise UsageError(f"{root} has no SCAN__VARIANT folders of the scans in truth.json")
    return dirs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.realdev",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", help="IR (default: L3EDGE_MODEL, then the bundled model)")
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--variants", type=Path, help="run the variants stability.py --keep wrote here instead")
    a = ap.parse_args(argv)
    truth_path = a.root / "truth.json"
    if not truth_path.is_file():
        print(f"error: {truth_path} not found (the real scans live outside the repository)", file=sys.stderr)
        return 2
    truth = json.loads(truth_path.read_text())
    try:
        locator = L3Locator.load(a.model, refine=not a.no_refine)
        if a.variants is None:
            rows = [check(locator, a.root / name, t) for name, t in sorted(truth.items())]
        else:
            rows = [check(locator, d, truth[d.name.split("__")[0]]) for d in _variant_dirs(a.variants, truth)]
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for row in rows:
        print(_line(row))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
