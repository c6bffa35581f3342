"""Write phantom MIPs in the public L3 dataset's npz layout, to try the real-data path without the real data.

    python -m tools.phantom_npz runs/phantom_l3.npz --n 300 --seed 5 [--head-last-frac 1] [--col-mm 0.7 1]

Each scan is an ``l3edge.phantom.fast_projection`` MIP sampled at its simulated slices (one row per slice, as
a real MIP), stored head last for a share ``--head-last-frac`` of the scans (to exercise orientation
detection), in int16 HU, with ``spacings`` [column mm, column mm, slice mm], ``names`` ``ph<seed>-<patient>-
<k>`` (``--scans-per-patient`` consecutive scans share a patient, for folds by patient), ``images_s`` a
stand-in (phantoms have no sagittal MIP; l3edge does not read it) and ``ydata`` two annotators whose L3 rows
are the true row plus independent noise of ``--annotator-sd`` rows (NaN for scans without L3). A sidecar
``<out>.truth.json`` records the truth (stored orientation, true row, region) for checking the pipeline; the
npz itself holds only what the real file holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from tools.cache_phantoms import parse_mix, phantom_seed, pick_region
from tools.cache_writer import sample_rows
from tools.truth import truth_slices

ANNOTATORS = ("annotator_a", "annotator_b")


def phantom_mip(
    index: int, seed: int, mix: dict[str, float], col_mm: float
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """(MIP superior row first with one row per simulated slice, slice spacing mm, truth dict)."""
    from l3edge.phantom import fast_projection

    kw: dict[str, Any] = {"mm_per_px": col_mm}
    if mix:
        kw["region"] = pick_region(index, seed, mix)
    proj, truth_obj = fast_projection(phantom_seed(index, seed), **kw)
    truth = truth_obj.to_dict()
    slices = truth_slices(truth)
    if slices is None:  # cannot happen for fast_projection truths; keep the rows as they are
        return proj.mip_hu, float(abs(proj.z_mm[0] - proj.z_mm[1])), truth
    return sample_rows(proj.mip_hu, proj.z_mm, slices), float(truth["slice_spacing_mm"]), truth


def write_phantom_npz(
    out: str | Path,
    n: int,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    head_last_frac: float = 1.0,
    col_mm: tuple[float, float] = (2.0, 2.0),
    scans_per_patient: int = 1,
    annotator_sd: float = 0.5,
) -> list[dict[str, Any]]:
    """Write the npz (see the module docstring) and its ``.truth.json``; returns the per-scan truth."""
    rng = np.random.default_rng([seed, 31])
    images, sagittal, spacings, names, truths = [], [], [], [], []
    rows = {a: np.full(n, np.nan) for a in ANNOTATORS}
    for i in range(n):
        dx = float(rng.uniform(*col_mm)) if col_mm[1] > col_mm[0] else float(col_mm[0])
        mip, dz, truth = phantom_mip(i, seed, mix or {}, dx)
        head_last = bool(rng.random() < head_last_frac)
        n_rows = mip.shape[0]
        true_row = None
        if truth["l3_in_view"]:
            true_row = (float(truth["scan_z_range"][1]) - float(truth["l3_z_mm"])) / dz  # superior first
            true_row = n_rows - 1 - true_row if head_last else true_row
            for a in ANNOTATORS:
                rows[a][i] = float(np.clip(true_row + rng.normal(0, annotator_sd), 0, n_rows - 1))
        stored = mip[::-1] if head_last else mip
        images.append(np.clip(np.rint(stored), -32768, 32767).astype(np.int16))
        sagittal.append(np.full((n_rows, 8), -1000, np.int16))
        spacings.append([dx, dx, dz])
        names.append(f"ph{seed}-{i // scans_per_patient:05d}-{i % scans_per_patient}")
        truths.append(
            {
                "index": i,
                "name": names[-1],
                "head_last": head_last,
                "true_row_stored": true_row,
                "rows": n_rows,
                "slice_mm": dz,
                "col_mm": dx,
                "region": truth["region"],
                "l3_in_view": truth["l3_in_view"],
            }
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        images_f=_objects(images),
        images_s=_objects(sagittal),
        spacings=np.asarray(spacings, dtype=np.float64),
        names=np.asarray(names),
        ydata=np.array(dict(rows), dtype=object),
    )
    out.with_suffix(".truth.json").write_text(json.dumps(truths, indent=1))
    return truths


def _objects(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-d object array of 2-d arrays (assigned one by one: numpy would stack equal shapes)."""
    a = np.empty(len(arrays), dtype=object)
    for i, x in enumerate(arrays):
        a[i] = x
    return a


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.phantom_npz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("out", type=Path, help="output .npz (keep it out of the repository)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--region-mix", default="", help="as tools.build_cache (default: the generator's mix)")
    ap.add_argument("--head-last-frac", type=float, default=1.0, help="share of scans stored head last")
    ap.add_argument("--col-mm", type=float, nargs=2, default=(0.7, 1.0), help="column spacing range, mm")
    ap.add_argument("--scans-per-patient", type=int, default=1)
    ap.add_argument("--annotator-sd", type=float, default=0.5, help="annotator noise, rows")
    a = ap.parse_args(argv)
    truths = write_phantom_npz(
        a.out,
        a.n,
        a.seed,
        parse_mix(a.region_mix),
        a.head_last_frac,
        tuple(a.col_mm),
        a.scans_per_patient,
        a.annotator_sd,
    )
    with_l3 = sum(t["l3_in_view"] for t in truths)
    print(json.dumps({"out": str(a.out), "scans": len(truths), "with_l3": with_l3}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
