"""The runtime's stages on cached scans, shared by train, evaluate, crossval, quantize, variants and e2e.

Per cached scan: ``normalize`` -> ``l3edge.place.place_levels`` (windows as is and mirrored, the ladder of
levels, refinement on the same scan in the refiner's cache, placement on the slices, confidence, review): the
locator's own post-model step, so evaluation and serving cannot drift apart. Each scan's row compares the
answer with the labels, for the requested level and (multi-level models) for every level. Models are torch
checkpoints or OpenVINO IRs. Summaries: tools/summary.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import UsageError
from l3edge.metadata import ModelMetadata, ModelSpace
from l3edge.place import PlacedLevel, place_levels, review_below
from l3edge.preprocess import normalize
from l3edge.refine import refine_zs
from tools.data import CachedScan, load_cache
from tools.levels import LevelLabels, level_labels
from tools.summary import _num, summarize

log = logging.getLogger("tools.pipeline")
RunFn = Callable[[np.ndarray], np.ndarray]


def resolve_device(name: str, threads: int | None = None) -> Any:
    """``auto`` (CUDA when torch sees it), ``cpu``, ``cuda``, ``cuda:1`` -> torch.device; sets the threads."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA device; use --device cpu or auto")
    if threads:
        torch.set_num_threads(threads)
    return torch.device(name)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for evaluation."""

    run: RunFn
    """float32 [B, C, H, W] -> [B, P, K, 1]."""
    meta: ModelMetadata
    """Its metadata (an IR's own; a checkpoint's as export would write it): model space, levels, threshold."""
    output_stride: int | None
    """Strip mode stride (None: per-window only)."""
    params: int | None
    """Number of weights (None when unknown)."""
    name: str
    """Short description for tables."""

    @property
    def space(self) -> ModelSpace:
        return self.meta.space

    @property
    def threshold(self) -> float:
        return self.meta.presence_threshold


def torch_runner(model: Any, device: Any = "cpu", bf16: bool = False) -> RunFn:
    """Wrap a torch L3Net (eval mode) as a numpy ``run`` function (``bf16``: under bfloat16 autocast)."""
    import torch

    dev_type = torch.device(device).type

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16):
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
            return model(x).float().cpu().numpy()

    return run


def _ir_params(path: Path) -> int | None:
    try:
        import openvino as ov

        return int(
            sum(
                np.prod(op.get_output_shape(0))
                for op in ov.Core().read_model(str(path)).get_ops()
                if op.get_type_name() == "Constant"
                and len(op.get_output_shape(0)) >= 1
                and np.prod(op.get_output_shape(0)) > 1
            )
        )
    except (ImportError, RuntimeError):
        return None


def load_model(path: str | Path, device: str = "cpu", threshold: float | None = None) -> LoadedModel:
    """A checkpoint (.pt, run with torch) or an OpenVINO IR (.xml, run with l3edge.runtime.OVModel)."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        from l3edge.runtime import OVModel

        ov_model = OVModel.load(path)
        meta = ov_model.metadata
        if threshold is not None:
            meta = replace(meta, presence_threshold=threshold)
        return LoadedModel(
            ov_model.run,
            meta,
            meta.output_stride_px,
            _ir_params(path),
            f"{meta.name} ({meta.precision}, OpenVINO)",
        )
    from tools.checkpoint import checkpoint_metadata, load_checkpoint

    try:
        model, ckpt = load_checkpoint(path)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UsageError(f"cannot load checkpoint {path}: {exc}") from exc
    dev = resolve_device(device)
    model.to(dev)
    params = sum(p.numel() for p in model.parameters())
    meta = checkpoint_metadata(ckpt, 0.5 if threshold is None else threshold)
    return LoadedModel(torch_runner(model, dev), meta, 16, params, f"{ckpt['arch']} (torch)")


@dataclass(frozen=True)
class Refiner:
    """A refiner (see ``l3edge.refine``) with a cache of the same scans in its own model space."""

    run: RunFn
    space: ModelSpace
    band: tuple[float, float]
    shifts_px: tuple[int, ...]
    scans: dict[str, CachedScan]
    """The refiner's cache, by scan id."""

    def refine_zs(self, scan_id: str, z_mm: list[float]) -> list[float]:
        fine = self.scans.get(scan_id)
        if fine is None:
            raise UsageError(f"scan {scan_id} is not in the refiner's cache; build it for the same scans")
        channels = normalize(fine.image, self.space)
        h = self.space.window_height_px
        return refine_zs(self.run, channels, fine.grid, list(z_mm), h, self.band, self.shifts_px)


def load_refiner(
    path: str | Path,
    cache_dir: str | Path,
    ids: list[str] | None = None,
    device: str = "cpu",
    shifts_px: tuple[int, ...] = (-8, 0, 8),
) -> Refiner:
    """A refiner checkpoint (band from its training config, ``shifts_px`` given) or IR (both from its
    metadata), with its cache."""
    m = load_model(path, device)
    band: tuple[float, float] | None
    if Path(path).suffix.lower() == ".xml":
        band, shifts_px = m.meta.refine_band, m.meta.refine_shifts_px
    else:
        from tools.checkpoint import load_checkpoint

        lo, hi = load_checkpoint(path)[1]["config"]["band"]
        band = (float(lo), float(hi)) if 0 <= lo < hi <= 1 else None  # a main model regresses beyond
    if band is None:
        raise UsageError(f"{path} is not a refiner")
    space, scans = load_cache(cache_dir, ids)
    if space != m.space:
        raise UsageError(f"{path} uses another model space than the cache {cache_dir}")
    return Refiner(m.run, space, band, tuple(shifts_px), {s.id: s for s in scans})


def _score(scan: CachedScan, labels: LevelLabels, k: int, p: PlacedLevel) -> dict[str, Any]:
    """One level's answer against its label: found, errors, inside the body."""
    z_label, in_view = float(labels.rows[k]), bool(labels.in_view[k] and labels.known[k])
    z_label = float(scan.grid.row_to_z(z_label)) if math.isfinite(z_label) else math.nan
    top, bottom = labels.body_z[k]
    if in_view and math.isfinite(top) and math.isfinite(bottom):
        in_view = _whole(top, bottom, scan.z_slices)  # a body the scan's end cuts should not be found
    truth_slice = int(np.argmin(np.abs(scan.z_slices - z_label))) if in_view else None
    r: dict[str, Any] = {
        "in_view": in_view,
        "found": p.found,
        "label_z_mm": _num(z_label),
        "pred_z_mm": None if p.z_mm is None else round(p.z_mm, 3),
        "pred_slice": p.row,
        "truth_slice": truth_slice,
        "error_slices": None,
        "error_mm": None,
        "in_body": None,
    }
    if in_view and p.row is not None and p.z_mm is not None and truth_slice is not None:
        r["error_slices"] = abs(p.row - truth_slice)
        r["error_mm"] = round(abs(p.z_mm - z_label), 3)
    if in_view and math.isfinite(top) and math.isfinite(bottom):
        lo, hi = sorted((top, bottom))
        r["in_body"] = bool(p.z_mm is not None and lo <= p.z_mm <= hi)
    return r


def _whole(top: float, bottom: float, z_slices: np.ndarray) -> bool:
    """Both endplates of a body inside the scanned range (slice centres plus half a slice)."""
    z = np.asarray(z_slices, dtype=np.float64)
    half = float(np.median(np.abs(np.diff(z)))) / 2 if z.size > 1 else 0.0
    lo, hi = sorted((top, bottom))
    return bool(z.min() - half <= lo and hi <= z.max() + half)


def _sacrum_count_body(scan: CachedScan, level: str) -> tuple[float, float] | None:
    """Body extent of the vertebra that is ``level`` counted up from S1 (truth names), e.g. L3 = 3 above."""
    if not (level.startswith("L") and level[1:].isdigit()):
        return None
    verts = sorted(
        ((n, v) for n, v in (scan.meta.get("vertebrae") or {}).items() if v.get("z_mm") is not None),
        key=lambda nv: -float(nv[1]["z_mm"]),
    )
    names = [n for n, _ in verts]
    if "S1" not in names:
        return None
    i = names.index("S1") - (6 - int(level[1:]))
    if i < 0:
        return None
    v = verts[i][1]
    if v.get("z_top_mm") is None or v.get("z_bottom_mm") is None:
        return None
    lo, hi = sorted((float(v["z_top_mm"]), float(v["z_bottom_mm"])))
    return lo, hi


def locate_cached(
    run: RunFn,
    scan: CachedScan,
    meta: ModelMetadata,
    stride: int,
    output_stride: int | None,
    refiner: Refiner | None = None,
    level: str | None = None,
    mirror: bool = True,
) -> dict[str, Any]:
    """The runtime's post-model step on one cached scan, compared with its labels."""
    t0 = time.perf_counter()
    level = level or meta.level
    channels = normalize(scan.image, meta.space)
    refine = None if refiner is None else (lambda zs: refiner.refine_zs(scan.id, zs))
    placed = place_levels(
        run, channels, scan.grid, meta, stride, output_stride, scan.z_slices, refine, mirror
    )
    ms = (time.perf_counter() - t0) * 1000
    levels = meta.model_levels
    labels = level_labels(scan, levels)
    p = placed.levels[level]
    r: dict[str, Any] = {"id": scan.id, "level": level, **_score(scan, labels, levels.index(level), p)}
    r.update(
        confidence=round(p.confidence, 4),
        presence=round(p.presence, 4),
        ramp_r=round(p.ramp_r, 4),
        review=placed.review(level, review_below(meta)),
        review_other=placed.review(level, 0.0),
        counts_agree=placed.counts_agree,
        ms=round(ms, 2),
        region=scan.meta.get("region"),
        variants=scan.meta.get("variants") or [],
    )
    found, in_view = r["found"], r["in_view"]
    r["outcome"] = (
        "hit" if in_view and found else "missed" if in_view else "false_found" if found else "true_absent"
    )
    alt = _sacrum_count_body(scan, level) if in_view and r["in_body"] is not None else None
    if alt is not None and p.z_mm is not None:
        r["in_body_either"] = bool(r["in_body"] or alt[0] <= p.z_mm <= alt[1])
    if len(levels) > 1:
        r["levels"] = {m: _score(scan, labels, k, placed.levels[m]) for k, m in enumerate(levels)}
    return r


def evaluate_scans(
    run: RunFn,
    scans: list[CachedScan],
    meta: ModelMetadata,
    stride: int = 4,
    output_stride: int | None = 16,
    refiner: Refiner | None = None,
    level: str | None = None,
    mirror: bool = True,
) -> dict[str, Any]:
    """{'scans': per-scan results, 'summary': totals} for ``scans``."""
    results = [locate_cached(run, s, meta, stride, output_stride, refiner, level, mirror) for s in scans]
    return {"scans": results, "summary": summarize(results)}
