"""k-fold cross-validation by patient: train on k-1 folds, test on the held-out one, never on training scans.

    python -m tools.evaluate --folds 5 --arch cnn4 --cache cache/phantoms --steps 600 [--json cv.json]
    python -m tools.evaluate --folds 5 --arch vgg16 --cache cache/kanavati --prune 0.85 --int8

The folds are the cache's ``folds.json`` (``build_cache --split``) when it has one, else made the same way
(tools/folds.py). With ``--prune`` each fold's trained model is also filter-pruned (tools.prune), fine-tuned
on the same fold's training scans only and tested; with ``--int8`` the last model of the chain is exported and
INT8-quantized (tools.quantize, calibrated on training windows only) and the IR is tested through
``l3edge.runtime.OVModel``. Each stage is a row of the seed's table.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from l3edge.errors import UsageError
from l3edge.metadata import ModelSpace
from tools.checkpoint import checkpoint_metadata
from tools.data import CachedScan, load_cache
from tools.folds import folds_for
from tools.pipeline import evaluate_scans, torch_runner
from tools.summary import markdown_table, summarize, table_row
from tools.train import train_on

log = logging.getLogger("tools.crossval")


def _prune_and_tune(
    model: Any,
    space: ModelSpace,
    arch: str,
    train_scans: list[CachedScan],
    ratio: float,
    tmp: Path,
    levels: list[str],
    **cfg: Any,
) -> tuple[Any, dict[str, Any]]:
    """The pruned model, fine-tuned on the fold's training scans (validation split inside them), and the
    fine-tune's metrics."""
    from tools.checkpoint import save_checkpoint
    from tools.prune import prune_model, rebuild

    pruned = rebuild(prune_model(model, space, ratio), arch, space)
    if cfg.get("steps", 0) <= 0:
        return pruned, {"steps_done": 0}
    init = tmp / "pruned_init.pt"
    save_checkpoint(init, pruned, arch, space, levels=levels, pruning={"ratio": ratio})
    tuned, metrics = train_on(train_scans, space, arch, None, init=str(init), **cfg)
    return tuned, {k: metrics[k] for k in ("steps_done", "stopped", "seconds", "best_step")}


def _int8_runner(
    model: Any,
    space: ModelSpace,
    arch: str,
    train_scans: list[CachedScan],
    n_calib: int,
    seed: int,
    xml: Path,
    levels: list[str],
) -> Any:
    from l3edge.runtime import OVModel
    from tools.export import metadata_from_checkpoint, to_openvino, write_ir
    from tools.models import describe
    from tools.quantize import calibration_windows, quantize_model

    meta = metadata_from_checkpoint(
        {"arch": arch, **describe(model), "space_obj": space, "levels": levels}, ""
    )
    calib = calibration_windows(train_scans, space, n_calib, meta.default_stride_px, seed)
    q = quantize_model(to_openvino(model, space), meta, calib)
    write_ir(q, dataclasses.replace(meta, precision="int8", name=meta.name.replace("-fp32", "-int8")), xml)
    return OVModel.load(xml).run


def _stage_name(arch: str, cfg: dict[str, Any]) -> str:
    """The table's method name (other widths than the architecture's show in the params column)."""
    if cfg.get("init"):
        return f"{arch} fine-tuned from {Path(cfg['init']).name}"
    return arch + (" (ImageNet init)" if cfg.get("pretrained") else "")


def cross_validate(
    cache_dir: str | Path,
    arch: str,
    folds: int = 5,
    seed: int = 0,
    stride: int = 4,
    threshold: float = 0.5,
    out_dir: str | Path | None = None,
    prune: float | None = None,
    prune_steps: int = 300,
    prune_lr: float = 1e-4,
    prune_budget_min: float | None = None,
    int8: bool = False,
    calib_windows: int = 300,
    **train_cfg: Any,
) -> dict[str, Any]:
    """k-fold CV by patient: train on k-1 folds with tools.train.train_on, evaluate on the held-out fold only
    (and, with ``prune``/``int8``, the pruned and quantized models of each fold)."""
    if folds < 2:
        raise UsageError("--folds must be >= 2")
    space, scans = load_cache(cache_dir)
    fold_ids, where = folds_for(cache_dir, [s.meta for s in scans], folds, seed)
    log.info("folds: %s", where)
    by_id = {s.id: s for s in scans}
    stages = [_stage_name(arch, train_cfg)]
    if prune is not None:
        stages.append(f"{arch} pruned {prune:g}, fine-tuned")
    if int8:
        stages.append(f"{stages[-1]}, INT8")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in stages}
    params: dict[str, int] = {}
    per_fold = []
    tune_cfg = {k: v for k, v in train_cfg.items() if k not in ("init", "widths", "hidden", "pretrained")}
    tune_cfg.update(steps=prune_steps, lr=prune_lr, time_budget_min=prune_budget_min)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for f, test in enumerate(fold_ids):
            held = set(test)
            train_scans = [s for s in scans if s.id not in held]
            test_scans = [by_id[i] for i in test]
            out = Path(out_dir) / f"{arch}-fold{f}.pt" if out_dir else None
            log.info("fold %d/%d: train %d, test %d", f + 1, folds, len(train_scans), len(test_scans))
            model, metrics = train_on(train_scans, space, arch, out, seed=seed, **train_cfg)
            models, tuned = [model], None
            levels = list(metrics.get("levels") or [])
            meta = checkpoint_metadata({"arch": arch, "space_obj": space, "levels": levels}, threshold)
            if prune is not None:
                pruned, tuned = _prune_and_tune(
                    model, space, arch, train_scans, prune, tmp, levels, seed=seed, **tune_cfg
                )
                models.append(pruned)
            runners = [torch_runner(m) for m in models]
            if int8:
                xml = (Path(out_dir) if out_dir else tmp) / f"{arch}-fold{f}-int8.xml"
                run8 = _int8_runner(models[-1], space, arch, train_scans, calib_windows, seed, xml, levels)
                runners.append(run8)
                models.append(models[-1])
            fold_summary: dict[str, Any] = {}
            for stage, m, run in zip(stages, models, runners, strict=True):
                params[stage] = sum(p.numel() for p in m.parameters())
                rep = evaluate_scans(run, test_scans, meta, stride, 16)
                for r in rep["scans"]:
                    r["fold"] = f
                results[stage] += rep["scans"]
                fold_summary[stage] = rep["summary"]
            base = fold_summary[stages[0]]
            base["train"] = {
                k: metrics[k]
                for k in ("steps_done", "stopped", "seconds", "best_step", "loss_first", "loss_last")
            }
            if tuned is not None:
                base["prune_train"] = tuned
            per_fold.append(base)
            log.info(
                "fold %d: error %.2f mm, %s slices, wrong found/not %d/%d",
                f + 1,
                base["error_mm"]["mean"] or math.nan,
                base["error_slices"]["mean"],
                base["wrongly_found"],
                base["wrongly_not_found"],
            )
    summaries = {s: summarize(results[s]) for s in stages}
    label = f"({folds}-fold CV, stride {stride})"
    return {
        "scans": results[stages[0]],
        "summary": summaries[stages[0]],
        "folds": per_fold,
        "fold_ids": fold_ids,
        "folds_from": where,
        "stages": {s: {"summary": summaries[s], "params": params[s], "scans": results[s]} for s in stages},
        "model": {
            "arch": arch,
            "params": params[stages[0]],
            "stride": stride,
            "threshold": threshold,
            "train": train_cfg,
            "prune": None if prune is None else {"ratio": prune, **tune_cfg},
            "int8": int8,
        },
        "table": markdown_table([table_row(f"{s} {label}", summaries[s], params[s]) for s in stages]),
    }
