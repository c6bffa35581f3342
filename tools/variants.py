"""Compare model variants (before/after pruning and quantization): size, compute, speed, accuracy.

Per variant: parameters and GMACs for one window (torch-pruning's counter on the rebuilt torch model), IR size
on disk (xml + bin), windows/s on this CPU (batch of windows; FP32 IRs with INFERENCE_PRECISION_HINT=f32,
since OpenVINO would otherwise run them in bf16 on CPUs that support it; INT8 IRs as they are), strip-mode
milliseconds for one 480-row scan at the default stride, and, with ``--cache``, accuracy on validation scans
through ``tools.evaluate`` (MAE in mm over found scans, share inside the L3 body, wrongly found / not found,
cost). Checkpoints (.pt) are exported to a temporary FP32 IR first. Markdown to stdout, rows to ``--json``.

    python -m tools.variants --cache cache/ --val-scans ID ... runs/vgg16.pt models/a.xml models/a_int8.xml
    python -m tools.variants --random-sweep vgg16 --ratios 0 0.5 0.7 0.85 0.9 --int8   # speed only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.metadata import ModelMetadata
from l3edge.runtime import OVModel
from tools.data import CachedScan
from tools.export import export, read_metadata, rebuild_torch
from tools.pipeline import Refiner, evaluate_scans, load_refiner
from tools.prune import count_macs_params
from tools.quantize import load_scans

log = logging.getLogger(__name__)

STRIP_ROWS = 480


def bench_windows(model: OVModel, batch: int = 32, seconds: float = 2.0, seed: int = 0) -> float:
    """Windows per second on random [batch, C, H, W] input (speed does not depend on content)."""
    s = model.metadata.space
    x = np.random.default_rng(seed).standard_normal(
        (batch, s.channels, s.window_height_px, s.window_width_px)
    )
    x = x.astype(np.float32)
    model.run(x)  # warm-up (first inference allocates)
    n, t0 = 0, time.perf_counter()
    while True:
        model.run(x)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 3:
            return n * batch / dt


def bench_strip_ms(model: OVModel, rows: int = STRIP_ROWS, repeats: int = 5) -> float:
    """Median milliseconds for the strip path over one ``rows``-row scan at the default stride."""
    from l3edge.sliding import predict_strip

    meta = model.metadata
    if not meta.output_stride_px:
        return math.nan
    s = meta.space
    channels = (
        np.random.default_rng(0).standard_normal((s.channels, rows, s.window_width_px)).astype(np.float32)
    )
    predict_strip(model.run, channels, s.window_height_px, meta.default_stride_px, meta.output_stride_px)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_strip(model.run, channels, s.window_height_px, meta.default_stride_px, meta.output_stride_px)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def accuracy(model: OVModel, scans: Sequence[CachedScan], refiner: Refiner | None = None) -> dict[str, Any]:
    """Full-pipeline accuracy (tools.evaluate summary) at the model's stride and threshold."""
    m = model.metadata
    rep = evaluate_scans(model.run, list(scans), m, m.default_stride_px, m.output_stride_px, refiner)
    s = rep["summary"]
    return {
        "scans": s["n_scans"],
        "in_view": s["n_in_view"],
        "found_with_error": s["error_mm"]["n"],
        "mae_mm": s["error_mm"]["mean"],
        "median_mm": s["error_mm"]["median"],
        "max_mm": s["error_mm"]["max"],
        "inside_body": s["in_body_share"],
        "missed": s["wrongly_not_found"],
        "false_found": s["wrongly_found"],
        "cost_mm": s["cost_mm"],
    }


@dataclass(frozen=True)
class Timing:
    """How speed is measured."""

    batch: int = 32
    """Windows per inference for windows/s."""
    seconds: float = 2.0
    """Minimum timing duration per variant."""
    threads: int | None = None
    """INFERENCE_NUM_THREADS (None: OpenVINO's choice, all cores)."""


def evaluate_variant(
    xml: Path,
    label: str,
    scans: Sequence[CachedScan] | None,
    timing: Timing = Timing(),
    refiner: Refiner | None = None,
) -> dict[str, Any]:
    """One table row for the IR at ``xml``."""
    meta: ModelMetadata = read_metadata(xml)
    row: dict[str, Any] = {
        "variant": label,
        "name": meta.name,
        "arch": meta.architecture,
        "precision": meta.precision,
    }
    try:
        macs, params = count_macs_params(rebuild_torch(meta), meta.space)
        row.update(params=params, gmacs=macs / 1e9)
    except (KeyError, ValueError) as exc:  # IR exported without architecture numbers in extra
        log.warning("%s: cannot rebuild the torch model for counts (%s)", xml, exc)
        row.update(params=math.nan, gmacs=math.nan)
    row["ir_mb"] = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6
    precision = "f32" if meta.precision == "fp32" else None
    model = OVModel.load(xml, threads=timing.threads, inference_precision=precision)
    row["inference_precision"] = model.inference_precision
    row["threads"] = timing.threads or "all"
    row["windows_per_s"] = bench_windows(model, timing.batch, timing.seconds)
    row["strip_ms"] = bench_strip_ms(model)
    if scans:
        row.update(accuracy(model, scans, refiner))
    return row


def compare(
    models: Sequence[str | Path],
    cache: Path | None = None,
    val_ids: Sequence[str] | None = None,
    timing: Timing = Timing(),
    refiner: Refiner | None = None,
) -> list[dict[str, Any]]:
    """Rows for checkpoints (.pt, exported to a temporary FP32 IR) and IRs (.xml); ``refiner`` refines every
    model's estimates alike."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scans = None
        for i, m in enumerate(models):
            path = Path(m)
            xml = path
            if path.suffix == ".pt":
                xml = export(path, Path(tmp) / f"{i}_{path.stem}.xml")
            if cache is not None and scans is None:
                scans = load_scans(cache, read_metadata(xml).space, val_ids)
            rows.append(evaluate_variant(xml, path.name, scans, timing, refiner))
    return rows


def random_sweep(
    arch: str,
    ratios: Sequence[float],
    int8: bool,
    timing: Timing = Timing(),
    round_to: int = 8,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Speed of random-weight ``arch`` pruned at ``ratios`` (FP32; INT8 calibrated on random windows)."""
    import torch

    from tools.checkpoint import save_checkpoint
    from tools.data import default_space
    from tools.models import build_model
    from tools.prune import prune_checkpoint, sweep_paths

    space = default_space()
    torch.manual_seed(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / f"{arch}.pt"
        save_checkpoint(base, build_model(arch, space.window_height_px, space.window_width_px), arch, space)
        nonzero = [r for r in ratios if r > 0]
        paths = dict(zip(nonzero, sweep_paths(Path(tmp) / "pruned.pt", nonzero), strict=True))
        for r in ratios:
            ckpt = base if r == 0 else prune_checkpoint(base, r, paths[r], round_to=round_to, seed=seed)
            xml = export(ckpt, Path(tmp) / f"{ckpt.stem}.xml")
            rows.append(evaluate_variant(xml, f"{arch} p{r:.2f} fp32", None, timing))
            if int8:
                q = _quantize_random(xml, Path(tmp) / f"{ckpt.stem}_int8.xml", seed)
                rows.append(evaluate_variant(q, f"{arch} p{r:.2f} int8", None, timing))
    return rows


def _quantize_random(xml: Path, out: Path, seed: int) -> Path:
    """INT8 with calibration on random windows: for speed measurements only, never for a model to ship."""
    import dataclasses

    import openvino as ov

    from tools.export import write_ir
    from tools.quantize import quantize_model

    meta = read_metadata(xml)
    s = meta.space
    rng = np.random.default_rng(seed)
    calib = [
        rng.standard_normal((1, s.channels, s.window_height_px, s.window_width_px)).astype(np.float32)
        for _ in range(16)
    ]
    q = quantize_model(ov.Core().read_model(str(xml)), meta, calib)
    return write_ir(q, dataclasses.replace(meta, precision="int8", name=meta.name + "-int8-randcalib"), out)


COLUMNS = [
    ("variant", "variant", "{}"),
    ("params", "params", "{:,.0f}"),
    ("gmacs", "GMACs/window", "{:.3f}"),
    ("ir_mb", "IR MB", "{:.2f}"),
    ("inference_precision", "infer prec", "{}"),
    ("threads", "threads", "{}"),
    ("windows_per_s", "windows/s", "{:.0f}"),
    ("strip_ms", f"strip ms ({STRIP_ROWS} rows)", "{:.1f}"),
    ("mae_mm", "MAE mm", "{:.2f}"),
    ("median_mm", "median mm", "{:.2f}"),
    ("max_mm", "max mm", "{:.1f}"),
    ("inside_body", "in L3 body", "{:.0%}"),
    ("missed", "missed", "{}"),
    ("false_found", "false found", "{}"),
    ("cost_mm", "cost mm", "{:.2f}"),
]


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the columns present in any row."""
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            ok = v is not None and not (isinstance(v, float) and math.isnan(v))
            cells.append(fmt.format(v) if ok else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.variants", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", type=Path, help="checkpoints (.pt) and/or IRs (.xml)")
    p.add_argument("--cache", type=Path, help="training cache with the validation scans (accuracy columns)")
    p.add_argument(
        "--val-scans", nargs="*", help="cache ids to evaluate on (default: all scans in the cache)"
    )
    p.add_argument("--batch", type=int, default=32, help="windows per inference for windows/s")
    p.add_argument("--seconds", type=float, default=2.0, help="timing duration per variant")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--json", type=Path, help="write the rows as JSON here")
    p.add_argument("--random-sweep", metavar="ARCH", help="speed-only sweep of a randomly initialised ARCH")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.85, 0.9])
    p.add_argument("--int8", action="store_true", help="random sweep: add INT8 variants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refine-cache", type=Path, help="the validation scans in the refiner's model space")
    p.add_argument("--refiner", type=Path, help="refiner (checkpoint or IR) applied to every model")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    timing = Timing(a.batch, a.seconds, a.threads)
    if a.random_sweep:
        rows = random_sweep(a.random_sweep, a.ratios, a.int8, timing, seed=a.seed)
    elif a.models:
        refiner = None
        if a.refine_cache and a.refiner:
            refiner = load_refiner(a.refiner, a.refine_cache, a.val_scans)
        elif a.refine_cache or a.refiner:
            p.error("--refine-cache and --refiner go together")
        rows = compare(a.models, a.cache, a.val_scans, timing, refiner)
    else:
        p.error("give models to compare or --random-sweep ARCH")
    print(markdown(rows))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
