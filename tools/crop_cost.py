"""What the runtime's end crops (l3edge.agreement) cost the CNN stage: ``place_levels`` with and without them,
interleaved in one process, on fast phantoms of three scan ranges; prints a table of medians and the ratio.

    python -m tools.crop_cost [--repeat 15] [--threads 2] [--model M.xml]
"""

from __future__ import annotations

import argparse
import statistics

from l3edge.locator import L3Locator
from l3edge.phantom.render import fast_projection
from l3edge.place import place_levels
from l3edge.preprocess import normalize, to_model_space

REGIONS = ("abdomen", "cap", "wholebody")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=None)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    loc = L3Locator.load(a.model, threads=a.threads, refine=False)
    meta = loc.metadata
    print("| range | CNN ms, MIP + mirror | CNN ms, + head and foot crops | ratio |")
    print("|---|---|---|---|")
    for region in REGIONS:
        proj, _ = fast_projection(a.seed, region=region)
        image, grid = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, meta.space)
        channels = normalize(image, meta.space)
        ms: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(a.repeat):
            for crops in (False, True):
                placed = place_levels(
                    loc.model.run,
                    channels,
                    grid,
                    meta,
                    loc.stride,
                    meta.output_stride_px,
                    proj.z_mm,
                    crops=crops,
                )
                ms[crops].append(placed.timings_ms["cnn"])
        x, y = statistics.median(ms[False]), statistics.median(ms[True])
        print(f"| {region} | {x:.1f} | {y:.1f} | {y / x:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
