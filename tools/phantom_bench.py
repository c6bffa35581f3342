"""Phantom generation speed (fast MIP path and full DICOM series) and fast-vs-full MIP agreement.

    python -m tools.phantom_bench [--scans 40] [--parity-seeds 21 22 23]

Parity: mean |full - fast| in HU over the model-space image (4 mm/px, clipped to [100, 1500]) of the MIP
projected from every rendered slice (``project_full``) and the fast coarse-grid MIP (``fast_projection``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=40, help="fast-path scans to time per resolution")
    ap.add_argument("--slice-mm", type=float, default=1.0, help="slice spacing of the timed DICOM series")
    ap.add_argument("--parity-seeds", type=int, nargs="*", default=[21, 22, 23])
    ap.add_argument("--seed", type=int, default=1, help="seed of the timed DICOM series")
    a = ap.parse_args(argv)

    from l3edge.phantom import build_anatomy, fast_projection, project_full, sample_config, write_phantom
    from l3edge.preprocess import to_model_space
    from tools.data import default_space

    print("| what | result |\n|---|---|")
    for mm in (2.0, 4.0):
        fast_projection(0, mm)
        t = time.perf_counter()
        for s in range(a.scans):
            fast_projection(s, mm)
        rate = a.scans / (time.perf_counter() - t)
        print(f"| fast MIP path, {mm} mm/px, seeds 0-{a.scans - 1} | {rate:.1f} scans/s |")
    cfg = sample_config(a.seed, "abdomen", slice_spacing_mm=a.slice_mm, slice_thickness_mm=a.slice_mm)
    n = build_anatomy(cfg).slice_z.size
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        write_phantom(d, a.seed, config=cfg)
        dt = time.perf_counter() - t
    print(f"| full DICOM series, 512x512 x {n} slices, explicit VR | {dt:.1f} s ({n / dt:.0f} slices/s) |")

    space = default_space()

    def model_space(proj):  # noqa: ANN001, ANN202
        img, _ = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, space)
        return np.clip(img, 100, 1500)

    for seed in a.parity_seeds:
        base = sample_config(
            seed, "abdomen", matrix=256, pixel_spacing_mm=1.6, slice_spacing_mm=2.5, slice_thickness_mm=2.5
        )
        lv = build_anatomy(base).spine.by_name("L3")
        cfg = base.with_overrides(scan_z_range=(lv.z_center - 120, lv.z_center + 120))
        full, fast = model_space(project_full(cfg)), model_space(fast_projection(cfg, 2.0)[0])
        n = min(len(full), len(fast))
        print(
            f"| fast vs full MIP, seed {seed} (noise {cfg.noise_sd_hu:.0f} HU) | mean abs diff "
            f"{float(np.abs(full[:n] - fast[:n]).mean()):.1f} HU |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
