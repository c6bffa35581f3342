"""Checkpoint format shared by train, prune, quantize, export and evaluate.

A checkpoint is a ``torch.save`` dict::

    {"format": 1, "arch": "vgg16", "widths": [...], "hidden": 256, "space": {ModelSpace fields},
     "state_dict": {...}, "level": "L3", "trained_on": "...", "config": {...}, "metrics": {...},
     "parent_sha256": "" | "<sha of the checkpoint this one was derived from>"}

``widths``/``hidden`` rebuild filter-pruned models without pickling modules.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from l3edge.metadata import ModelMetadata, ModelSpace
from tools.models import L3Net, build_model, describe

FORMAT = 1


def save_checkpoint(path: str | Path, model: L3Net, arch: str, space: ModelSpace, **info: Any) -> str:
    """Write atomically; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "arch": arch,
        **describe(model),
        "space": space.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "level": info.pop("level", "L3"),
        "trained_on": info.pop("trained_on", ""),
        "config": info.pop("config", {}),
        "metrics": info.pop("metrics", {}),
        "parent_sha256": info.pop("parent_sha256", ""),
        **info,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def load_checkpoint(path: str | Path) -> tuple[L3Net, dict]:
    """Rebuild the model (pruned or not) and return it in eval mode with the checkpoint dict."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an l3edge checkpoint (format {FORMAT})")
    space = ModelSpace.from_dict(ckpt["space"])
    model = build_model(
        ckpt["arch"],
        space.window_height_px,
        space.window_width_px,
        space.channels,
        hidden=ckpt.get("hidden"),
        widths=ckpt.get("widths"),
        outputs=int(ckpt.get("outputs", 2)),
    )
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    ckpt["space_obj"] = space
    return model, ckpt


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_metadata(ckpt: dict[str, Any], threshold: float = 0.5) -> ModelMetadata:
    """The runtime metadata a checkpoint's model would be exported with (levels, model space, threshold),
    for running the runtime's post-model step on its torch outputs."""
    levels = tuple(ckpt.get("levels") or ())
    level = str(ckpt.get("level") or "L3")
    if levels and level not in levels:
        level = levels[0]
    return ModelMetadata(
        name=str(ckpt.get("arch", "checkpoint")),
        version="",
        space=ckpt["space_obj"] if "space_obj" in ckpt else ModelSpace.from_dict(ckpt["space"]),
        level=level,
        levels=levels if len(levels) > 1 else (),
        presence_threshold=threshold,
    )
