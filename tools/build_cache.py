"""Build a training cache: every scan read once through the runtime reader and stored in model space.

Real or DICOM-phantom scans::

    python -m tools.build_cache scans.csv [more.csv | phantom_dir ...] --out cache/mine [--workers 2]

Synthetic phantoms without writing DICOM (how the default model's training set is made)::

    python -m tools.build_cache --phantoms 3000 --seed 0 --out cache/phantoms [--region-mix abdomen=3,chest=1]

The cache is resumable: scans already cached in ``--out`` are skipped. See tools/data.py for the format.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import L3EdgeError, UsageError
from l3edge.metadata import ModelSpace
from l3edge.preprocess import to_model_space
from tools.data import (
    CACHE_FORMAT,
    CHANNEL_PRESETS,
    INDEX_NAME,
    TRUTH_NAME,
    ScanRecord,
    gather_records,
    label_from_record,
    label_from_truth,
    make_meta,
    read_meta,
    save_cached,
    truth_slices,
)

log = logging.getLogger("tools.build_cache")

DTYPES = ("float32", "float16", "int16")


class Progress:
    """A one-line progress counter on stderr (no tqdm dependency)."""

    def __init__(self, total: int, label: str = "cache", stream: Any = None) -> None:
        self.total, self.label, self.done, self.failed = total, label, 0, 0
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += not ok
        now = time.perf_counter()
        if now - self._last > 0.5 or self.done == self.total:
            self._last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            self.stream.write(
                f"\r{self.label}: {self.done}/{self.total} ({self.failed} failed) "
                f"{rate:.1f}/s eta {eta:.0f}s "
            )
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


# --- one scan ---------------------------------------------------------------------------------------------


def _store(
    folder: Path,
    space: ModelSpace,
    dtype: str,
    scan_id: str,
    source: str,
    path: str,
    level: str,
    proj: Any,
    label_z: float,
    in_view: bool,
    truth: dict[str, Any] | None,
) -> dict[str, Any]:
    mip, z = proj.mip_hu, np.asarray(proj.z_mm, dtype=np.float64)
    slices = truth_slices(truth) if source == "phantom-fast" else None
    if slices is not None:
        # Fast MIP rows are finer than the simulated slices: sample them at the slice centres (the rows are
        # already blurred by the slice thickness) so that the model sees what the runtime makes of a real
        # series of those slices, step-like rows included when the model space is finer than the slices.
        mip, z = sample_rows(mip, z, slices), slices
    image, grid = to_model_space(mip, z, proj.col_spacing_mm, space)
    meta = make_meta(scan_id, source, path, level, grid, z, label_z, in_view, truth)
    save_cached(folder, meta, image, z, dtype)
    return meta


def cache_record(record: ScanRecord, folder: Path, space: ModelSpace, dtype: str) -> dict[str, Any]:
    """Read one listed scan with ``l3edge.scan.read_projection`` and cache it; returns its metadata."""
    from l3edge.scan import read_projection

    path = record.path
    if record.phantom and path.is_dir():
        # write_phantom(fmt="nifti") leaves phantom.nii.gz next to truth.json (a DICOM phantom has none).
        nifti = sorted(path.glob("*.nii.gz")) + sorted(path.glob("*.nii"))
        path = nifti[0] if nifti else path
    proj = read_projection(path)
    truth = None
    if record.phantom:
        truth = json.loads((record.path / TRUTH_NAME).read_text())
        label_z, in_view = label_from_truth(truth, record.level, proj.z_mm)
    else:
        label_z, in_view = label_from_record(record, proj)
    source = proj.series.source if proj.series is not None else "memory"
    return _store(
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


def phantom_id(index: int, seed: int) -> str:
    return f"phantom-s{seed}-{index:06d}"


def phantom_seed(index: int, seed: int) -> int:
    """Per-scan seed: independent streams for (seed, index), stable across runs and worker counts."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def pick_region(index: int, seed: int, mix: dict[str, float]) -> str:
    rng = np.random.default_rng(phantom_seed(index, seed) ^ 0x5EED)
    names = sorted(mix)
    p = np.array([mix[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def cache_phantom(
    index: int,
    seed: int,
    mix: dict[str, float],
    phantom_mm: float | None,
    level: str,
    folder: Path,
    space: ModelSpace,
    dtype: str,
) -> dict[str, Any]:
    """Generate phantom ``index`` with ``l3edge.phantom.fast_projection`` (no DICOM) and cache it."""
    from l3edge.phantom import fast_projection

    region = pick_region(index, seed, mix) if mix else None
    kwargs: dict[str, Any] = {}
    if phantom_mm is not None:
        kwargs["mm_per_px"] = phantom_mm
    if region is not None:
        kwargs["region"] = region
    proj, truth_obj = fast_projection(phantom_seed(index, seed), **kwargs)
    truth = truth_obj.to_dict() if hasattr(truth_obj, "to_dict") else dict(truth_obj)
    if region is not None:
        truth.setdefault("region", region)
    label_z, in_view = label_from_truth(truth, level, proj.z_mm)
    return _store(
        folder,
        space,
        dtype,
        phantom_id(index, seed),
        "phantom-fast",
        f"phantom:{seed}:{index}",
        level,
        proj,
        label_z,
        in_view,
        truth,
    )


def sample_rows(mip: np.ndarray, z_rows: np.ndarray, z_at: np.ndarray) -> np.ndarray:
    """Rows of ``mip`` (at ``z_rows``, descending) linearly interpolated at ``z_at``."""
    pos = np.interp(-np.asarray(z_at, dtype=np.float64), -z_rows, np.arange(z_rows.size, dtype=np.float64))
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, z_rows.size - 1)
    i1 = np.minimum(i0 + 1, z_rows.size - 1)
    f = (pos - i0)[:, None].astype(np.float32)
    return (mip[i0] * (1 - f) + mip[i1] * f).astype(np.float32)


# --- the whole cache --------------------------------------------------------------------------------------


def _call(
    job: tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...]],
) -> tuple[str, dict[str, Any] | None, str]:
    scan_id, fn, args = job
    try:
        return scan_id, fn(*args), ""
    except (L3EdgeError, OSError, ValueError, KeyError) as exc:
        # One unreadable scan must not stop a long build; it is listed in the index with the reason.
        return scan_id, None, f"{type(exc).__name__}: {exc}"


def _open_cache(folder: Path, space: ModelSpace) -> dict[str, dict[str, Any]]:
    """Create ``folder`` or check that it was built with ``space``; returns the scans already cached."""
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / INDEX_NAME
    if index_path.is_file():
        old = json.loads(index_path.read_text())
        if old.get("space") != json.loads(json.dumps(space.to_dict())):
            raise UsageError(f"{folder} was built with another model space; use a new --out folder")
    done = {}
    for p in sorted(folder.glob("*.npz")):
        if p.name.startswith("."):
            continue
        try:
            done[p.stem] = read_meta(p)
        except (OSError, ValueError, KeyError):
            log.warning("re-caching unreadable %s", p.name)
    return done


def _write_index(
    folder: Path,
    space: ModelSpace,
    metas: dict[str, dict[str, Any]],
    failed: dict[str, str],
    info: dict[str, Any],
) -> None:
    index = {
        "format": CACHE_FORMAT,
        "space": space.to_dict(),
        "info": info,
        "scans": [metas[k] for k in sorted(metas)],
        "failed": failed,
    }
    tmp = folder / f".{INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(folder / INDEX_NAME)


def build_cache(
    jobs: list[tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...]]],
    folder: str | Path,
    space: ModelSpace,
    workers: int = 1,
    info: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run cache jobs ``(scan_id, fn, args)`` (skipping cached ids) and write the index. Returns a summary."""
    folder = Path(folder)
    metas = _open_cache(folder, space)
    todo = [j for j in jobs if j[0] not in metas]
    failed: dict[str, str] = {}
    bar = Progress(len(todo)) if progress and todo else None
    results: Iterable[tuple[str, dict[str, Any] | None, str]]
    pool = None
    if workers > 1 and len(todo) > 1:
        pool = mp.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)
        results = pool.imap_unordered(_call, todo, chunksize=max(1, min(16, len(todo) // (8 * workers))))
    else:
        results = map(_call, todo)
    try:
        for n, (scan_id, meta, err) in enumerate(results, start=1):
            if meta is not None:
                metas[scan_id] = meta
            else:
                failed[scan_id] = err
                log.warning("skipped %s: %s", scan_id, err)
            if bar:
                bar.update(meta is not None)
            if n % 200 == 0:  # checkpoint the index so an interrupted build still has a usable one
                _write_index(folder, space, metas, failed, info or {})
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    _write_index(folder, space, metas, failed, info or {})
    wanted = {j[0] for j in jobs}
    cached = [m for k, m in metas.items() if k in wanted]
    return {
        "cached": len(cached),
        "new": len(todo) - len(failed),
        "skipped_existing": len(jobs) - len(todo),
        "failed": len(failed),
        "in_view": sum(m["in_view"] for m in cached),
        "folder": str(folder),
    }


def record_jobs(
    records: list[ScanRecord], folder: Path, space: ModelSpace, dtype: str
) -> list[tuple[Any, ...]]:
    return [(r.scan_id, cache_record, (r, folder, space, dtype)) for r in records]


def phantom_jobs(
    n: int,
    seed: int,
    mix: dict[str, float],
    phantom_mm: float | None,
    level: str,
    folder: Path,
    space: ModelSpace,
    dtype: str,
) -> list[tuple[Any, ...]]:
    return [
        (phantom_id(i, seed), cache_phantom, (i, seed, mix, phantom_mm, level, folder, space, dtype))
        for i in range(n)
    ]


def parse_mix(text: str | None) -> dict[str, float]:
    """``abdomen=3,chest=1`` -> weights; empty -> {} (the phantom generator's default region)."""
    if not text:
        return {}
    mix = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        try:
            mix[name.strip()] = float(w) if w else 1.0
        except ValueError:
            raise UsageError(f"--region-mix: {part!r} is not NAME=WEIGHT") from None
    if any(not math.isfinite(v) or v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise UsageError("--region-mix weights must be >= 0 and not all 0")
    return mix


def main(argv: list[str] | None = None) -> int:
    from tools.data import default_space

    ap = argparse.ArgumentParser(
        prog="python -m tools.build_cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "inputs",
        nargs="*",
        help="scan-list CSVs and/or phantom folders (truth.json; or folders of them). CSV columns: path "
        "(DICOM folder or NIfTI file, relative to the CSV) and the labelled slice as ONE of z_mm "
        "(patient z, mm), "
        "slice_index (0-based; DICOM: z-ascending feet->head order; NIfTI: the file's third-axis index) or "
        "sop_instance_uid; all three empty = the vertebra is not in the scan; optional level (default L3)",
    )
    ap.add_argument("--out", required=True, type=Path, help="cache folder (created; resumable)")
    ap.add_argument(
        "--phantoms", type=int, default=0, help="generate N fast phantoms instead of reading scans"
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="phantom seed (scan i uses a stream derived from seed, i)"
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
    ap.add_argument("--dtype", default="float32", choices=DTYPES, help="image storage (HU)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(message)s")
    try:
        space = default_space(a.channels, a.mm_per_px, a.window[0], a.window[1], a.pad_px)
        level = a.level.upper()
        if a.phantoms > 0:
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
            records = gather_records(a.inputs, level)
            jobs = record_jobs(records, a.out, space, a.dtype)
            info = {"kind": "scans", "inputs": [str(p) for p in a.inputs]}
        else:
            raise UsageError("give scan-list CSVs / phantom folders, or --phantoms N")
        summary = build_cache(jobs, a.out, space, a.workers, info, progress=not a.quiet)
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
