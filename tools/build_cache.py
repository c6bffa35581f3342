"""Build a training cache: every scan read once through the runtime reader and stored in model space.

Real or DICOM-phantom scans::

    python -m tools.build_cache scans.csv [more.csv | phantom_dir ...] --out cache/mine [--workers 2]

Precomputed frontal MIPs (tools/mips.py): the public L3 dataset (Kanavati et al. 2018) or a MIP manifest::

    python -m tools.build_cache l3_dataset.npz --out cache/kanavati --split [--head-first | --head-last]
    python -m tools.build_cache mips.csv --out cache/mips [--png-hu-offset 1024]

A reviewed cohort: the results of ``l3edge predict`` and the review page's ``corrections.csv`` (accepted and
corrected picks label their level; rejected scans label it as not in view)::

    python -m tools.build_cache --results results.jsonl --corrections corrections.csv --out cache/reviewed

Synthetic phantoms without writing DICOM (how the default model's training set is made)::

    python -m tools.build_cache --phantoms 3000 --seed 0 --out cache/phantoms [--region-mix abdomen=3,chest=1]

``--like MODEL`` builds the cache in a model's space (a checkpoint to fine-tune, or an IR). ``--split`` writes
the cross-validation folds by patient (tools/folds.py). The cache is resumable: scans already cached in
``--out`` are skipped. See tools/data.py for the format and the label contract.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from l3edge.errors import InputError, L3EdgeError, UsageError
from l3edge.metadata import ModelSpace
from tools.cache_phantoms import parse_mix, phantom_jobs
from tools.cache_writer import Progress, build_cache, store_projection
from tools.data import (
    CHANNEL_PRESETS,
    TRUTH_NAME,
    ScanRecord,
    gather_records,
    label_from_record,
    label_from_truth,
)

__all__ = ["Progress", "build_cache", "main"]  # build_cache and Progress live in tools.cache_writer
# The phantom path (--phantoms) lives in tools.cache_phantoms, storing a projection in tools.cache_writer.

log = logging.getLogger("tools.build_cache")

DTYPES = ("float32", "float16", "int16")


# --- one scan ---------------------------------------------------------------------------------------------


def cache_record(record: ScanRecord, folder: Path, space: ModelSpace, dtype: str) -> dict[str, Any]:
    """Read one listed scan with ``l3edge.scan.read_projection`` and cache it; returns its metadata."""
    from l3edge.scan import read_projection

    path = record.path
    if record.phantom and path.is_dir():
        # write_phantom(fmt="nifti") leaves phantom.nii.gz next to truth.json (a DICOM phantom has none).
        nifti = sorted(path.glob("*.nii.gz")) + sorted(path.glob("*.nii"))
        path = nifti[0] if nifti else path
    proj = read_projection(path, series_uid=record.series_uid)
    truth = None
    if record.phantom:
        truth = json.loads((record.path / TRUTH_NAME).read_text())
        label_z, in_view = label_from_truth(truth, record.level, proj.z_mm)
    else:
        label_z, in_view = label_from_record(record, proj)
    source = proj.series.source if proj.series is not None else "memory"
    return store_projection(
        folder,
        space,
        dtype,
        record.scan_id,
        source,
        str(record.path),
        record.level,
        proj,
        label_z,
        in_view,
        truth,
    )


def record_jobs(
    records: list[ScanRecord], folder: Path, space: ModelSpace, dtype: str
) -> list[tuple[Any, ...]]:
    return [(r.scan_id, cache_record, (r, folder, space, dtype)) for r in records]


def model_space_of(model: str | Path) -> ModelSpace:
    """The model space of a checkpoint (.pt) or an OpenVINO IR (.xml)."""
    path = Path(model)
    if not path.is_file():
        raise UsageError(f"--like {path}: no such file")
    try:
        if path.suffix.lower() == ".xml":
            from l3edge.runtime import load_metadata

            return load_metadata(path).space
        import torch

        return ModelSpace.from_dict(torch.load(path, map_location="cpu", weights_only=False)["space"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--like {path}: not an l3edge checkpoint or IR ({exc})") from exc


def mip_sources(a: argparse.Namespace, npz: list[Path], manifests: list[Path], level: str) -> list[Any]:
    """The MIPs of the npz files and manifests, with their orientation decided (tools/orientation.py)."""
    from tools import orientation as ori
    from tools.mips import read_l3_npz, read_manifest

    groups = [(read_l3_npz(f, level, a.patient_regex), a.orientation or "detect") for f in npz]
    groups += [(read_manifest(f, level, a.png_hu_offset), a.orientation or "default") for f in manifests]
    scorer = None
    out: list[Any] = []
    for scans, mode in groups:
        scores: list[dict[str, float] | None] = [None] * len(scans)
        if mode.startswith("detect"):
            scorer = scorer or ori.locator_scorer(a.orient_model)
            bar = Progress(sum(s.has_label for s in scans), "orientation") if not a.quiet else None
            voting = [s for s in scans if s.has_label]
            it = iter(ori.score_all(voting, scorer, bar.update if bar else None))
            scores = [next(it) if s.has_label else None for s in scans]
        out += ori.decide(scans, scores, mode, a.min_margin)
    return out


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m tools.build_cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "inputs",
        nargs="*",
        help="scan-list CSVs, MIP manifests (CSV with an image column), L3 dataset .npz files and/or phantom "
        "folders (truth.json; or folders of them). Scan-list columns: path "
        "(DICOM folder or NIfTI file, relative to the CSV) and the labelled slice as ONE of z_mm "
        "(patient z, mm), "
        "slice_index (0-based; DICOM: z-ascending feet->head order; NIfTI: the file's third-axis index) or "
        "sop_instance_uid; all three empty = the vertebra is not in the scan; optional level (default L3). "
        "Manifest columns: see tools/mips.py",
    )
    ap.add_argument("--out", required=True, type=Path, help="cache folder (created; resumable)")
    ap.add_argument("--results", type=Path, help="results of l3edge predict (with --corrections)")
    ap.add_argument(
        "--corrections", type=Path, help="corrections.csv of the review page over --results: its labels"
    )
    ap.add_argument(
        "--phantoms", type=int, default=0, help="generate N fast phantoms instead of reading scans"
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="phantom seed (scan i uses a stream derived from seed, i); also the --split seed",
    )
    ap.add_argument(
        "--region-mix",
        default="",
        help="phantom regions with weights, e.g. abdomen=3,chest=1 (default: the "
        "generator's own mix of abdomen, cap, wholebody, chest, l3_top, l3_bottom)",
    )
    ap.add_argument(
        "--phantom-mm", type=float, default=None, help="phantom voxel size passed to fast_projection"
    )
    ap.add_argument("--level", default="L3", help="vertebra to target for phantoms / rows without a level")
    ap.add_argument(
        "--channels",
        default="bone",
        choices=sorted(CHANNEL_PRESETS),
        help="bone: [100,1500] HU x3 (seed); windows: bone, soft tissue [-160,240], wide [-1000,2000]",
    )
    ap.add_argument("--mm-per-px", type=float, default=4.0)
    ap.add_argument("--window", type=int, nargs=2, default=(80, 64), metavar=("H", "W"), help="window px")
    ap.add_argument("--pad-px", type=int, default=80)
    ap.add_argument(
        "--like",
        metavar="MODEL",
        help="take the model space from this checkpoint (.pt) or IR (.xml), e.g. the one to fine-tune "
        "(overrides --channels, --mm-per-px, --window and --pad-px)",
    )
    ap.add_argument("--dtype", default="float32", choices=DTYPES, help="image storage (HU)")
    ap.add_argument("--workers", type=int, default=1)
    g = ap.add_argument_group(
        "MIP orientation (npz and manifests; default: --detect for an npz, head first for a manifest)"
    )
    og = g.add_mutually_exclusive_group()
    for flag in ("head-first", "head-last", "detect", "detect-per-scan"):
        helps = {
            "head-first": "row 0 of every stored MIP is the head end",
            "head-last": "the last row of every stored MIP is the head end",
            "detect": "run a model both ways; the file's majority vote decides for all its scans",
            "detect-per-scan": "as --detect, but each scan with a clear vote takes its own",
        }
        og.add_argument(f"--{flag}", dest="orientation", action="store_const", const=flag, help=helps[flag])
    g.add_argument("--orient-model", help="model for --detect (default: $L3EDGE_MODEL, else the bundled one)")
    g.add_argument("--min-margin", type=float, default=0.05, help="smallest confidence gap that votes")
    ap.add_argument("--patient-regex", help="npz: the patient is group 1 of this regex on the name")
    ap.add_argument("--png-hu-offset", type=float, help="manifest PNGs: HU = value - offset")
    ap.add_argument("--split", action="store_true", help="write folds.json: --folds folds by patient")
    ap.add_argument("--folds", type=int, default=5, help="number of folds for --split (default 5)")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tools.data import default_space, read_index

    a = _args(argv)
    info: dict[str, Any]
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(message)s")
    try:
        if a.like:
            space = model_space_of(a.like)
        else:
            space = default_space(a.channels, a.mm_per_px, a.window[0], a.window[1], a.pad_px)
        level = a.level.upper()
        if (a.results is None) != (a.corrections is None):
            raise UsageError("--results and --corrections go together")
        if a.results is not None:
            if a.inputs or a.phantoms:
                raise UsageError("--corrections builds from the reviewed scans only: no other inputs")
            from tools.reviewed import correction_records, drop_stale

            jobs = record_jobs(correction_records(a.results, a.corrections), a.out, space, a.dtype)
            drop_stale(a.out, {j[0] for j in jobs})
            info = {"kind": "corrections", "results": str(a.results), "corrections": str(a.corrections)}
        elif a.phantoms > 0:
            from l3edge.phantom.config import REGIONS

            mix = parse_mix(a.region_mix)
            if set(mix) - set(REGIONS):
                bad = sorted(set(mix) - set(REGIONS))
                raise UsageError(f"--region-mix: unknown region(s) {bad}; use {', '.join(REGIONS)}")
            jobs = phantom_jobs(a.phantoms, a.seed, mix, a.phantom_mm, level, a.out, space, a.dtype)
            info = {
                "kind": "phantom-fast",
                "n": a.phantoms,
                "seed": a.seed,
                "region_mix": mix,
                "level": level,
            }
        elif a.inputs:
            from tools.mips import is_manifest, mip_jobs

            paths = [Path(p) for p in a.inputs]
            npz = [p for p in paths if p.suffix.lower() == ".npz"]
            manifests = [p for p in paths if p.suffix.lower() == ".csv" and is_manifest(p)]
            others: list[str | Path] = [p for p in paths if p not in npz and p not in manifests]
            jobs = record_jobs(gather_records(others, level), a.out, space, a.dtype) if others else []
            if npz or manifests:
                jobs += mip_jobs(mip_sources(a, npz, manifests, level), a.out, space, a.dtype)
            kind = "mips" if not others else "scans"
            info = {"kind": kind, "inputs": [str(p) for p in a.inputs], "level": level}
        else:
            raise UsageError("give scan lists, MIP manifests, .npz files or phantom folders, or --phantoms N")
        summary = build_cache(jobs, a.out, space, a.workers, info, progress=not a.quiet)
        if a.results is not None and summary["failed"]:
            failed = read_index(a.out)["failed"]
            first = next(iter(failed.values()), "")
            raise InputError(
                f"{summary['failed']} reviewed scans could not be cached (see the index), first: {first}"
            )
        wanted = {j[0] for j in jobs}
        metas = [m for m in read_index(a.out)["scans"] if m["id"] in wanted]
        oriented = [m for m in metas if "orientation" in m]
        if oriented:
            from tools.orientation import summarize_orientation

            summary["orientation"] = summarize_orientation(oriented, a.min_margin)
        if a.split:
            from tools.folds import write_folds

            doc = write_folds(a.out, a.folds, a.seed)
            summary["folds"] = {
                "k": doc["k"],
                "sizes": [len(f) for f in doc["folds"]],
                "patients": doc["n_patients"],
            }
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
