"""INT8 post-training quantization of an l3edge IR with NNCF, calibrated on real windows of the cache.

Calibration items are single windows [1, C, H, W] cut at the runtime's stride from the cached model-space
scans (normalised with ``l3edge.preprocess.normalize``), sampled uniformly over all windows of all scans: the
same distribution the model sees at run time, padding rows included. ``--accuracy-aware`` runs
``nncf.quantize_with_accuracy_control`` with the full pipeline (tools.evaluate: strip inference + ramp
fit + found rule) on validation scans as the metric (minus the mean per-scan error in mm, misses at the miss
cost) and keeps its increase within ``--max-drop-mm``. The window head (the convolutions named ``/head/``:
a small share of the compute that regresses the offsets) stays in FP32 unless ``--int8-head``: on the
validation phantoms an INT8 head cost 1.1 mm of coarse error and 2 points inside the L3 body on normal
anatomy (bundled 0.3.0 model). The metadata is re-written (NNCF may drop rt_info) with precision ``int8``
and the calibration settings in ``extra``.

    python -m tools.quantize models/vgg16-p85.xml --cache cache/ --out models/vgg16-p85-int8.xml \
        [--subset 300] [--accuracy-aware --max-drop-mm 0.5 --val-scans ID ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nncf
import numpy as np
import openvino as ov

from l3edge.errors import L3EdgeError, UsageError
from l3edge.metadata import ModelMetadata, ModelSpace
from l3edge.preprocess import cut_windows, normalize, window_tops
from l3edge.runtime import load_metadata
from l3edge.sliding import RunFn
from tools.checkpoint import sha256_file
from tools.data import CachedScan, load_cache
from tools.export import attach_refiner, write_ir
from tools.pipeline import locate_cached
from tools.summary import summarize

log = logging.getLogger(__name__)


def load_scans(
    cache_dir: str | Path, space: ModelSpace, ids: Sequence[str] | None = None
) -> list[CachedScan]:
    """Cached scans (all, or ``ids``); the cache must be built in the model's space."""
    cache_space, scans = load_cache(cache_dir, list(ids) if ids else None)
    if cache_space != space:
        raise UsageError(f"cache {cache_dir} was built for another model space than the model's; rebuild it")
    return scans


def calibration_windows(
    scans: Sequence[CachedScan], space: ModelSpace, n: int, stride: int, seed: int = 0
) -> list[np.ndarray]:
    """``n`` windows [1, C, H, W] drawn uniformly (without replacement) from every window of every scan."""
    h = space.window_height_px
    pool = [(i, int(t)) for i, s in enumerate(scans) for t in window_tops(s.image.shape[0], h, stride)]
    if not pool:
        raise UsageError("the cache has no scan tall enough for one window")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))
    channels = {i: normalize(scans[i].image, space) for i in sorted({pool[k][0] for k in pick})}
    return [cut_windows(channels[pool[k][0]], np.array([pool[k][1]]), h) for k in pick]


def scan_costs_mm(run: RunFn, scans: Iterable[CachedScan], meta: ModelMetadata) -> list[float]:
    """Per-scan cost through the evaluation pipeline (tools.evaluate): the error in mm for a found level
    (capped), 0 for a correctly absent one, the miss cost for a wrong found / not found."""
    m = meta
    costs = []
    for s in scans:
        r = locate_cached(run, s, m, m.default_stride_px, m.output_stride_px)
        costs.append(float(summarize([r], breakdown=False)["cost_mm"]))
    return costs


def compiled_runner(compiled: ov.CompiledModel) -> RunFn:
    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(np.ascontiguousarray(x, dtype=np.float32))[0])

    return run


def quantize_model(
    ov_model: ov.Model,
    meta: ModelMetadata,
    calib: list[np.ndarray],
    val_scans: Sequence[CachedScan] | None = None,
    max_drop_mm: float = 0.5,
    int8_head: bool = False,
) -> ov.Model:
    """INT8 PTQ (or accuracy-controlled PTQ when ``val_scans`` are given) of an FP32 ov.Model; the head's
    convolutions stay FP32 unless ``int8_head``.

    The accuracy-control metric is minus the mean per-scan cost of :func:`scan_costs_mm` (mm, higher is
    better), so ``max_drop_mm`` bounds the increase of the mean error (with misses counted at the miss cost).
    """
    calibration = nncf.Dataset(calib)
    ignored = nncf.IgnoredScope(names=[] if int8_head else head_ops(ov_model), validate=False)
    if not val_scans:
        return nncf.quantize(ov_model, calibration, subset_size=len(calib), ignored_scope=ignored)

    def validate(compiled: ov.CompiledModel, items: Iterable[CachedScan]) -> tuple[float, list[float]]:
        costs = scan_costs_mm(compiled_runner(compiled), items, meta)
        return -float(np.mean(costs)), [-c for c in costs]

    return nncf.quantize_with_accuracy_control(
        ov_model,
        calibration,
        nncf.Dataset(list(val_scans)),
        validate,
        max_drop=max_drop_mm,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calib),
        ignored_scope=ignored,
    )


def head_ops(ov_model: ov.Model) -> list[str]:
    """Friendly names of the window head's convolutions (torch module ``head`` of tools.models)."""
    return [
        op.get_friendly_name()
        for op in ov_model.get_ordered_ops()
        if op.get_type_name() == "Convolution" and op.get_friendly_name().startswith("/head/")
    ]


def quantize_ir(
    xml: str | Path,
    cache_dir: str | Path,
    out_xml: str | Path,
    subset: int = 300,
    accuracy_aware: bool = False,
    max_drop_mm: float = 0.5,
    calib_ids: Sequence[str] | None = None,
    val_ids: Sequence[str] | None = None,
    seed: int = 0,
    int8_head: bool = False,
) -> Path:
    """Quantize the IR at ``xml`` to INT8 and write it (metadata kept, precision int8); returns out_xml."""
    meta = load_metadata(xml)  # the runtime's reader: an unreadable IR is one ModelError line
    ov_model = ov.Core().read_model(str(xml))
    scans = load_scans(cache_dir, meta.space, calib_ids)
    calib = calibration_windows(scans, meta.space, subset, meta.default_stride_px, seed)
    val = load_scans(cache_dir, meta.space, val_ids) if accuracy_aware else None
    q = quantize_model(ov_model, meta, calib, val, max_drop_mm, int8_head)
    info: dict[str, Any] = {
        "tool": f"nncf {nncf.__version__} "
        + ("quantize_with_accuracy_control" if accuracy_aware else "quantize"),
        "calibration_windows": len(calib),
        "calibration_scans": len(scans),
        "seed": seed,
        "stride_px": meta.default_stride_px,
        "fp32_ir_sha256": sha256_file(Path(xml).with_suffix(".bin")),
        "fp32_ops": [] if int8_head else head_ops(ov_model),
    }
    if val:
        core = ov.Core()
        f32 = {"INFERENCE_PRECISION_HINT": "f32"}
        fp32 = scan_costs_mm(compiled_runner(core.compile_model(ov_model, "CPU", f32)), val, meta)
        int8 = scan_costs_mm(compiled_runner(core.compile_model(q, "CPU")), val, meta)
        info.update(
            max_drop_mm=max_drop_mm,
            val_scans=len(val),
            val_cost_mm_fp32=float(np.mean(fp32)),
            val_cost_mm_int8=float(np.mean(int8)),
        )
        log.info("validation cost %.2f mm (fp32) -> %.2f mm (int8)", np.mean(fp32), np.mean(int8))
    name = meta.name[: -len("-fp32")] if meta.name.endswith("-fp32") else meta.name
    new_meta = dataclasses.replace(
        meta, name=f"{name}-int8", precision="int8", extra={**meta.extra, "quantization": info}
    )
    if meta.refiner:  # the refiner (FP32, small) goes along
        new_meta = attach_refiner(new_meta, Path(xml).parent / meta.refiner, out_xml)
    return write_ir(q, new_meta, out_xml)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.quantize", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="FP32 IR (.xml) written by tools.export")
    p.add_argument("--cache", type=Path, required=True, help="training cache (tools.build_cache)")
    p.add_argument("--out", type=Path, required=True, help="output INT8 IR (.xml)")
    p.add_argument("--subset", type=int, default=300, help="calibration windows")
    p.add_argument("--calib-scans", nargs="*", help="cache ids for calibration (default: all)")
    p.add_argument("--accuracy-aware", action="store_true", help="NNCF accuracy control on validation scans")
    p.add_argument("--max-drop-mm", type=float, default=0.5, help="allowed mean error increase, mm")
    p.add_argument("--val-scans", nargs="*", help="cache ids for validation (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--int8-head", action="store_true", help="quantize the window head too (default: FP32)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path, what in ((a.model, "model"), (a.cache, "cache")):
        if not path.exists():
            print(f"error: {what} {path} does not exist", file=sys.stderr)
            return 2
    try:
        out = quantize_ir(
            a.model,
            a.cache,
            a.out,
            a.subset,
            a.accuracy_aware,
            a.max_drop_mm,
            a.calib_scans,
            a.val_scans,
            a.seed,
            a.int8_head,
        )
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
