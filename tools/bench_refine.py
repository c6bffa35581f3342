"""Benchmark: the refiner stage with one pass and with ``REFINE_PASSES`` (``l3edge.refine``), interleaved in
one process on the same projections, with how far the answer moves.

    python -m tools.bench_refine ../shared/data/real_dev/abdomen_ct_to_sacrum_l3 [more scans] [--repeat 7]

Each scan is read once (``read_projection``, the series ``l3edge predict`` chooses); then rounds alternate
between the pass counts, ``--repeat`` times each, timing ``L3Locator.predict_projection``'s ``refine`` stage
(all levels, the full MIP and its two crops) and the stages after reading (CNN + post-process + refine).
Medians in ms; a shared machine is noisy, so compare the rows of one scan.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import l3edge.refine as refinement
from l3edge.errors import L3EdgeError
from l3edge.locator import L3Locator
from l3edge.scan import read_projection


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_refine", description=__doc__)
    ap.add_argument("scans", nargs="+", help="scan folders (DICOM) or NIfTI files")
    ap.add_argument("--model", help="IR (default: L3EDGE_MODEL, then the bundled model)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--passes", type=int, nargs="+", default=[1, refinement.REFINE_PASSES])
    a = ap.parse_args(argv)
    default = refinement.REFINE_PASSES
    try:
        locator = L3Locator.load(a.model)
        print("| scan | passes | refine stage ms | CNN + post-process + refine ms | L3 z mm |")
        print("|---|---|---|---|---|")
        for path in a.scans:
            proj = read_projection(path, series_uid=locator.predict(path).series_instance_uid)
            times: dict[int, list[tuple[float, float]]] = {p: [] for p in a.passes}
            z: dict[int, float | None] = {}
            for _ in range(a.repeat):
                for p in a.passes:
                    refinement.REFINE_PASSES = p
                    r = locator.predict_projection(proj, path=str(path))
                    t = r.timings_ms
                    times[p].append(
                        (t.get("refine", 0.0), t["cnn"] + t["postprocess"] + t.get("refine", 0.0))
                    )
                    z[p] = r.z_mm
            for p in a.passes:
                ref = statistics.median(x for x, _ in times[p])
                tot = statistics.median(y for _, y in times[p])
                print(f"| {path} | {p} | {ref:.1f} | {tot:.1f} | {z[p]} |")
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        refinement.REFINE_PASSES = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
