"""Write a training cache: run per-scan cache jobs (in worker processes), keep the index, resume.

A job is ``(scan_id, fn, args)``; ``fn(*args)`` caches one scan and returns its metadata
(tools.data.make_meta). Scans already in the folder are skipped; a job that fails is listed in the index's
``failed`` with the reason, and the build goes on. See tools/data.py for the format.
"""

from __future__ import annotations

import json
import logging
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
from tools.data import CACHE_FORMAT, INDEX_NAME, make_meta, read_meta, save_cached, truth_slices

log = logging.getLogger("tools.build_cache")

Job = tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...]]


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


def store_projection(
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
    """Store one scan's projection in the cache (model space) with its metadata; returns the metadata."""
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


def sample_rows(mip: np.ndarray, z_rows: np.ndarray, z_at: np.ndarray) -> np.ndarray:
    """Rows of ``mip`` (at ``z_rows``, descending) linearly interpolated at ``z_at``."""
    pos = np.interp(-np.asarray(z_at, dtype=np.float64), -z_rows, np.arange(z_rows.size, dtype=np.float64))
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, z_rows.size - 1)
    i1 = np.minimum(i0 + 1, z_rows.size - 1)
    f = (pos - i0)[:, None].astype(np.float32)
    return (mip[i0] * (1 - f) + mip[i1] * f).astype(np.float32)
