"""Structural filter pruning of an L3Net checkpoint (torch-pruning), then a short recovery fine-tune.

Whole filters are removed by group L2 magnitude, uniformly per layer (``ratio`` of the channels of every conv
of the trunk and of the head's hidden layer; the final 2-channel output conv is kept), rounded to multiples of
``round_to`` channels for fast CPU kernels. The pruned net is still the plain VGG-style L3Net, so the
checkpoint stores only its ``widths``/``hidden`` and ``load_checkpoint`` rebuilds it.

    python -m tools.prune runs/vgg16.pt --ratio 0.5 0.7 0.85 --out runs/vgg16_pruned.pt \
        [--round-to 8] [--finetune-steps 2000 --cache cache/]
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from l3edge.metadata import ModelSpace
from tools.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from tools.models import L3Net, build_model, describe

log = logging.getLogger(__name__)


def count_macs_params(model: nn.Module, space: ModelSpace) -> tuple[int, int]:
    """(MACs, parameters) for one window of the model space (torch-pruning's counter: conv/linear MACs)."""
    x = torch.zeros(1, space.channels, space.window_height_px, space.window_width_px)
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, x)
    model.train(was_training)
    return int(macs), int(params)


def _set_inplace(model: nn.Module, inplace: bool) -> None:
    # torch-pruning traces the autograd graph; in-place ReLU rewrites the conv outputs' grad_fn (CopySlices),
    # so the tracer cannot map them back to their convolutions and finds nothing to prune.
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = inplace


def prune_model(model: L3Net, space: ModelSpace, ratio: float, round_to: int = 8) -> L3Net:
    """Return a pruned copy of ``model`` (the input is left unchanged)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    pruned = copy.deepcopy(model).eval()
    if ratio == 0.0:
        return pruned
    _set_inplace(pruned, False)
    example = torch.zeros(1, space.channels, space.window_height_px, space.window_width_px)
    # torch-pruning skips a layer outright when rounding would leave it no channels (64 channels at 0.9 keep
    # 6.4, rounded to 0 of 8): cap each layer's ratio so it keeps at least ``round_to`` channels.
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and m is not pruned.head[-1]]
    keep_min = max(round_to, 1)
    per_layer = {c: min(ratio, max(0.0, 1.0 - keep_min / c.out_channels)) for c in convs}
    pruner = tp.pruner.BasePruner(
        pruned,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        pruning_ratio_dict=per_layer,
        ignored_layers=[pruned.head[-1]],  # the output (offsets, presence logits per level) must stay
        round_to=round_to,
    )
    pruner.step()
    _set_inplace(pruned, True)
    return pruned


def rebuild(model: L3Net, arch: str, space: ModelSpace) -> L3Net:
    """A fresh model with ``model``'s widths and weights, as ``load_checkpoint`` will build it."""
    d = describe(model)
    fresh = build_model(arch, space.window_height_px, space.window_width_px, space.channels, **d)
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def sweep_paths(out: Path, ratios: list[float]) -> list[Path]:
    """One output per ratio: ``out`` itself for one ratio, else ``<stem>_pNN<suffix>``."""
    if len(ratios) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_p{round(r * 100):02d}{out.suffix}") for r in ratios]


def prune_checkpoint(
    ckpt_path: str | Path,
    ratio: float,
    out: str | Path,
    round_to: int = 8,
    finetune_steps: int = 0,
    cache_dir: str | Path | None = None,
    lr: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """Prune a checkpoint, optionally fine-tune it, and save it with its parent's SHA-256; returns ``out``."""
    model, ckpt = load_checkpoint(ckpt_path)
    space: ModelSpace = ckpt["space_obj"]
    arch = ckpt["arch"]
    macs0, params0 = count_macs_params(model, space)
    pruned = prune_model(model, space, ratio, round_to)
    macs1, params1 = count_macs_params(pruned, space)
    log.info(
        "ratio %.2f: widths %s hidden %d, params %d -> %d, MACs %.3fG -> %.3fG",
        ratio,
        describe(pruned)["widths"],
        describe(pruned)["hidden"],
        params0,
        params1,
        macs0 / 1e9,
        macs1 / 1e9,
    )
    if finetune_steps > 0:
        if cache_dir is None:
            raise ValueError("--finetune-steps needs --cache")
        from tools.train import fine_tune  # training helper's module; imported only when fine-tuning

        levels = ",".join(ckpt.get("levels") or [ckpt.get("level", "L3")])
        pruned = fine_tune(
            pruned,
            space,
            Path(cache_dir),
            finetune_steps,
            lr,
            seed,
            device,
            ckpt.get("level", "L3"),
            levels=levels,
        )
        pruned = pruned.cpu().eval()
    pruning: dict[str, Any] = {
        "ratio": ratio,
        "round_to": round_to,
        "importance": "group L2 magnitude, uniform per layer",
        "parent_widths": list(ckpt["widths"]),
        "parent_hidden": ckpt["hidden"],
        "params_before": params0,
        "params_after": params1,
        "macs_before": macs0,
        "macs_after": macs1,
        "finetune_steps": finetune_steps,
        "finetune_lr": lr,
        "seed": seed,
        "parent_metrics": dict(ckpt.get("metrics") or {}),
    }
    out = Path(out)
    save_checkpoint(
        out,
        pruned,
        arch,
        space,
        level=ckpt.get("level", "L3"),
        levels=list(ckpt.get("levels") or []),
        trained_on=ckpt.get("trained_on", ""),
        config=ckpt.get("config", {}),
        metrics={},
        parent_sha256=sha256_file(ckpt_path),
        pruning=pruning,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.prune", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument(
        "--ratio", type=float, nargs="+", required=True, help="channel pruning ratio(s), e.g. 0.5 0.85"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output checkpoint (one ratio) or name template (sweep)"
    )
    p.add_argument("--round-to", type=int, default=8, help="keep channel counts multiples of this")
    p.add_argument("--finetune-steps", type=int, default=0, help="recovery fine-tune steps (0: none)")
    p.add_argument("--cache", type=Path, help="training cache for the fine-tune")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for ratio, out in zip(a.ratio, sweep_paths(a.out, a.ratio), strict=True):
        prune_checkpoint(
            a.checkpoint, ratio, out, a.round_to, a.finetune_steps, a.cache, a.lr, a.seed, a.device
        )
        print(out)


if __name__ == "__main__":
    main()
