"""The runtime's stages on cached scans, shared by train, evaluate, crossval, quantize, variants and e2e.

Per cached scan: ``normalize`` -> ``predict_strip`` (or ``predict_windows``) -> ``fit_ramp`` -> row -> z
[-> ``refine_row`` on the same scan in the refiner's cache] -> nearest slice, with the locator's rule that a
level placed outside the scanned range is reported not found; then the per-scan row compared with the label,
the summary over scans and the seed's table. Models are torch checkpoints or OpenVINO IRs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import UsageError
from l3edge.metadata import ModelSpace
from l3edge.postprocess import fit_ramp, place_on_slices
from l3edge.preprocess import normalize
from l3edge.refine import refine_row
from l3edge.sliding import predict
from tools.data import CachedScan, load_cache

log = logging.getLogger("tools.pipeline")
RunFn = Callable[[np.ndarray], np.ndarray]
MISS_COST_MM = 100.0


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
    """float32 [B, C, H, W] -> [B, 2, K, 1]."""
    space: ModelSpace
    """The model's model space (must match the cache's)."""
    output_stride: int | None
    """Strip mode stride (None: per-window only)."""
    threshold: float
    """Presence threshold."""
    params: int | None
    """Number of weights (None when unknown)."""
    name: str
    """Short description for tables."""


def torch_runner(model: Any, device: Any = "cpu") -> RunFn:
    """Wrap a torch L3Net (eval mode) as a numpy ``run`` function."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
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
        return LoadedModel(
            ov_model.run,
            meta.space,
            meta.output_stride_px,
            meta.presence_threshold if threshold is None else threshold,
            _ir_params(path),
            f"{meta.name} ({meta.precision}, OpenVINO)",
        )
    from tools.checkpoint import load_checkpoint

    try:
        model, ckpt = load_checkpoint(path)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UsageError(f"cannot load checkpoint {path}: {exc}") from exc
    dev = resolve_device(device)
    model.to(dev)
    params = sum(p.numel() for p in model.parameters())
    return LoadedModel(
        torch_runner(model, dev),
        ckpt["space_obj"],
        16,
        0.5 if threshold is None else threshold,
        params,
        f"{ckpt['arch']} (torch)",
    )


@dataclass(frozen=True)
class Refiner:
    """A refiner (see ``l3edge.refine``) with a cache of the same scans in its own model space."""

    run: RunFn
    space: ModelSpace
    band: tuple[float, float]
    shifts_px: tuple[int, ...]
    scans: dict[str, CachedScan]
    """The refiner's cache, by scan id."""

    def refine_z(self, scan_id: str, z_mm: float) -> float:
        fine = self.scans.get(scan_id)
        if fine is None:
            raise UsageError(f"scan {scan_id} is not in the refiner's cache; build it for the same scans")
        out = refine_row(
            self.run,
            normalize(fine.image, self.space),
            float(fine.grid.z_to_row(z_mm)),
            self.space.window_height_px,
            self.band,
            np.asarray(self.shifts_px),
        )
        return z_mm if out is None else float(fine.grid.row_to_z(out[0]))


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
        from l3edge.runtime import load_metadata

        meta = load_metadata(path)
        band, shifts_px = meta.refine_band, meta.refine_shifts_px
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


def locate_cached(
    run: RunFn,
    scan: CachedScan,
    space: ModelSpace,
    stride: int,
    output_stride: int | None,
    threshold: float,
    refiner: Refiner | None = None,
) -> dict[str, Any]:
    """The runtime pipeline on one cached scan, compared with its label."""
    t0 = time.perf_counter()
    channels = normalize(scan.image, space)
    h = space.window_height_px
    tops, preds = predict(run, channels, h, stride, output_stride)
    fit = fit_ramp(tops, preds[:, 0], preds[:, 1], h, threshold)
    z_sl = scan.z_slices
    z_fit = float(scan.grid.row_to_z(fit.row))
    if fit.found and refiner is not None:
        z_fit = refiner.refine_z(scan.id, z_fit)
    place = place_on_slices(fit, z_fit, z_sl, space.mm_per_px / 2)
    found, z_pred, pred_slice = place.found, place.z_mm, place.row
    ms = (time.perf_counter() - t0) * 1000
    truth_slice = scan.truth_slice()
    r: dict[str, Any] = {
        "id": scan.id,
        "in_view": scan.in_view,
        "found": found,
        "label_z_mm": _num(scan.label_z_mm),
        "pred_z_mm": None if pred_slice is None else round(float(z_pred), 3),
        "pred_slice": pred_slice,
        "truth_slice": truth_slice,
        "error_slices": None,
        "error_mm": None,
        "in_body": None,
        "confidence": round(fit.confidence, 4),
        "presence": round(fit.presence, 4),
        "ramp_r": round(fit.ramp_r, 4),
        "ms": round(ms, 2),
        "region": scan.meta.get("region"),
        "variants": scan.meta.get("variants") or [],
    }
    if scan.in_view and pred_slice is not None and truth_slice is not None:
        r["error_slices"] = abs(pred_slice - truth_slice)
        r["error_mm"] = round(abs(float(z_pred) - scan.label_z_mm), 3)
    v = scan.meta.get("vertebrae", {}).get(scan.meta.get("level", "L3"))
    if scan.in_view and v and v.get("z_top_mm") is not None and v.get("z_bottom_mm") is not None:
        lo, hi = sorted((v["z_top_mm"], v["z_bottom_mm"]))
        r["in_body"] = bool(pred_slice is not None and lo <= float(z_pred) <= hi)
    r["outcome"] = (
        "hit"
        if scan.in_view and found
        else "missed"
        if scan.in_view
        else "false_found"
        if found
        else "true_absent"
    )
    return r


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "sd": None, "median": None, "max": None, "n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 3),
        "sd": round(float(a.std()), 3),
        "median": round(float(np.median(a)), 3),
        "max": round(float(a.max()), 3),
        "n": int(a.size),
    }


def summarize(results: list[dict[str, Any]], breakdown: bool = True) -> dict[str, Any]:
    """Totals over per-scan results (see the module docstring for what counts where)."""
    hits = [r for r in results if r["error_slices"] is not None]
    in_body = [r["in_body"] for r in results if r["in_body"] is not None]
    cost = [
        min(r["error_mm"], MISS_COST_MM)
        if r["outcome"] == "hit" and r["error_mm"] is not None
        else 0.0
        if r["outcome"] == "true_absent"
        else MISS_COST_MM
        for r in results
    ]
    s: dict[str, Any] = {
        "n_scans": len(results),
        "n_in_view": sum(r["in_view"] for r in results),
        "error_slices": _stats([r["error_slices"] for r in hits]),
        "error_mm": _stats([r["error_mm"] for r in hits]),
        "in_body_share": round(float(np.mean(in_body)), 4) if in_body else None,
        "n_in_body_checked": len(in_body),
        "wrongly_found": sum(r["outcome"] == "false_found" for r in results),
        "wrongly_not_found": sum(r["outcome"] == "missed" for r in results),
        "ms_per_scan": round(float(np.mean([r["ms"] for r in results])), 2) if results else None,
        "cost_mm": round(float(np.mean(cost)), 3) if cost else math.inf,
    }
    if breakdown:
        regions = sorted({str(r["region"]) for r in results if r.get("region") is not None})
        if regions:
            s["by_region"] = {
                g: summarize([r for r in results if str(r.get("region")) == g], False) for g in regions
            }
        if any("variants" in r for r in results):
            # A scan counts under each of its variants (``none`` when it has none).
            def labels(r: dict[str, Any]) -> list[str]:
                return list(r.get("variants") or []) or ["none"]

            variants = sorted({v for r in results for v in labels(r)})
            s["by_variant"] = {v: summarize([r for r in results if v in labels(r)], False) for v in variants}
    return s


def evaluate_scans(
    run: RunFn,
    scans: list[CachedScan],
    space: ModelSpace,
    stride: int = 4,
    output_stride: int | None = 16,
    threshold: float = 0.5,
    refiner: Refiner | None = None,
) -> dict[str, Any]:
    """{'scans': per-scan results, 'summary': totals} for ``scans``."""
    results = [locate_cached(run, s, space, stride, output_stride, threshold, refiner) for s in scans]
    return {"scans": results, "summary": summarize(results)}


def pm(st: dict[str, Any]) -> str:
    return "-" if st["mean"] is None else f"{st['mean']:.2f} ± {st['sd']:.2f}"


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} K"


def table_row(method: str, s: dict[str, Any], params: int | None) -> list[str]:
    return [
        method,
        pm(s["error_slices"]),
        pm(s["error_mm"]),
        _params(params),
        f"{s['ms_per_scan'] / 1000:.3f} s" if s["ms_per_scan"] is not None else "-",
    ]


def markdown_table(rows: list[list[str]]) -> str:
    """The seed's table: method | error slices | error mm | params | time per scan."""
    head = ["method", "error (slices)", "error (mm)", "params", "time per scan"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
