"""The phantom path of tools.build_cache (``--phantoms N``): synthetic phantoms made in memory with
``l3edge.phantom.fast_projection`` (no DICOM written) and cached, one job per phantom; each phantom's seed
and region derive from (seed, index), so a cache is the same whatever the worker count.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import UsageError
from l3edge.metadata import ModelSpace
from tools.cache_writer import store_projection
from tools.data import label_from_truth


def phantom_id(index: int, seed: int) -> str:
    return f"phantom-s{seed}-{index:06d}"


def phantom_seed(index: int, seed: int) -> int:
    """Per-scan seed: independent streams for (seed, index), stable across runs and worker counts."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def pick_region(index: int, seed: int, mix: dict[str, float]) -> str:
    rng = np.random.default_rng(phantom_seed(index, seed) ^ 0x5EED)
    names = sorted(mix)
    p = np.array([mix[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def cache_phantom(
    index: int,
    seed: int,
    mix: dict[str, float],
    phantom_mm: float | None,
    level: str,
    folder: Path,
    space: ModelSpace,
    dtype: str,
) -> dict[str, Any]:
    """Generate phantom ``index`` with ``l3edge.phantom.fast_projection`` (no DICOM) and cache it."""
    from l3edge.phantom import fast_projection

    region = pick_region(index, seed, mix) if mix else None
    kwargs: dict[str, Any] = {}
    if phantom_mm is not None:
        kwargs["mm_per_px"] = phantom_mm
    if region is not None:
        kwargs["region"] = region
    proj, truth_obj = fast_projection(phantom_seed(index, seed), **kwargs)
    truth = truth_obj.to_dict() if hasattr(truth_obj, "to_dict") else dict(truth_obj)
    if region is not None:
        truth.setdefault("region", region)
    label_z, in_view = label_from_truth(truth, level, proj.z_mm)
    return store_projection(
        folder,
        space,
        dtype,
        phantom_id(index, seed),
        "phantom-fast",
        f"phantom:{seed}:{index}",
        level,
        proj,
        label_z,
        in_view,
        truth,
    )


def phantom_jobs(
    n: int,
    seed: int,
    mix: dict[str, float],
    phantom_mm: float | None,
    level: str,
    folder: Path,
    space: ModelSpace,
    dtype: str,
) -> list[tuple[Any, ...]]:
    return [
        (phantom_id(i, seed), cache_phantom, (i, seed, mix, phantom_mm, level, folder, space, dtype))
        for i in range(n)
    ]


def parse_mix(text: str | None) -> dict[str, float]:
    """``abdomen=3,chest=1`` -> weights; empty -> {} (the phantom generator's default region)."""
    if not text:
        return {}
    mix = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        try:
            mix[name.strip()] = float(w) if w else 1.0
        except ValueError:
            raise UsageError(f"--region-mix: {part!r} is not NAME=WEIGHT") from None
    if any(not math.isfinite(v) or v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise UsageError("--region-mix weights must be >= 0 and not all 0")
    return mix
