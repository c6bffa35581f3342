"""Drawing a phantom config: ``sample_config(seed)`` draws all fields from one numpy Generator seeded by
``seed``; ``**overrides`` replace fields after sampling (e.g. ``sample_config(3, n_ribs=11, n_lumbar=6)``).

Apart from ``config`` (the fields) because a spine CT is centred on L3, which needs the spine built from the
config (``levels``), and ``levels`` itself takes a config.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from l3edge.errors import UsageError
from l3edge.phantom.config import CUT_LEVELS, REGIONS, PhantomConfig
from l3edge.phantom.levels import build_spine

_REGION_WEIGHTS = (0.34, 0.2, 0.1, 0.12, 0.12, 0.12)
"""Of the first six regions; ``spine`` is drawn on its own stream (``_SPINE_P``) so the others' draws stay."""
_SPINE_P = 0.06


def _spacing(rng: np.random.Generator, region: str) -> tuple[float, float]:
    choices = [
        (0.625, 0.625),
        (1.0, 1.0),
        (1.25, 1.25),
        (2.0, 2.0),
        (2.5, 2.5),
        (3.0, 3.0),
        (5.0, 5.0),
        (2.0, 3.0),
        (0.8, 1.5),
    ]
    if region == "wholebody":  # keep whole-body series under ~1000 slices
        choices = [c for c in choices if c[0] >= 2.0]
    sp, th = choices[int(rng.integers(len(choices)))]
    return sp, th


def sample_config(seed: int, region: str | None = None, **overrides: object) -> PhantomConfig:
    """Draw a phantom config deterministically from ``seed``; ``region`` None draws one too."""
    if region is not None and region not in REGIONS:
        raise UsageError(f"unknown phantom region {region!r}; use one of {', '.join(REGIONS)}")
    rng = np.random.default_rng([int(seed), 0x13ED6E])
    region_arg = region
    drawn = REGIONS[int(rng.choice(len(_REGION_WEIGHTS), p=_REGION_WEIGHTS))]
    region = region or drawn
    sp, th = _spacing(rng, region)
    density = float(rng.uniform(0.35, 0.7)) if rng.random() < 0.2 else float(rng.uniform(0.8, 1.15))
    n_ribs = int(rng.choice([11, 12, 13], p=[0.08, 0.84, 0.08]))
    n_lumbar = int(rng.choice([4, 5, 6], p=[0.08, 0.84, 0.08]))
    depth = float(rng.uniform(0.8, 1.35))
    cfg = PhantomConfig(
        seed=int(seed),
        region=region,
        pixel_spacing_mm=float(rng.uniform(0.6, 1.0)),
        slice_spacing_mm=sp,
        slice_thickness_mm=th,
        top_margin_mm=float(rng.uniform(-10, 50)),
        bottom_margin_mm=float(rng.uniform(-10, 60)),
        l3_z_mm=float(rng.uniform(-900, 200)),
        lateral_offset_mm=float(rng.normal(0, 12)) if rng.random() < 0.7 else float(rng.uniform(-60, 60)),
        table_top_y_mm=float(rng.uniform(90, 170)),
        table_thickness_mm=float(rng.uniform(12, 45)),
        table_shell_hu=float(rng.uniform(-50, 250)),
        table_rails=bool(rng.random() < 0.5),
        body_width_scale=float(rng.uniform(0.85, 1.1)) * (0.6 + 0.4 * depth),
        body_depth_scale=depth,
        fat_mm=float(rng.uniform(5, 25) * depth**2),
        skeleton_scale=float(rng.uniform(0.88, 1.12)),
        bone_density=density,
        cortical_hu=float(rng.uniform(700, 1000)),
        cancellous_hu=float(rng.uniform(150, 300)),
        n_ribs=n_ribs,
        n_lumbar=n_lumbar,
        scoliosis_mm=float(rng.uniform(5, 30)) if rng.random() < 0.15 else float(rng.uniform(0, 3)),
        scoliosis_phase=float(rng.uniform(0, 2 * np.pi)),
        lordosis_scale=float(rng.uniform(0.6, 1.4)),
        iv_contrast=bool(rng.random() < 0.6),
        oral_contrast=bool(rng.random() < 0.3),
        spinal_hardware=bool(rng.random() < 0.06),
        hardware_top=int(rng.integers(1, 4)),
        hardware_levels=int(rng.integers(2, 4)),
        hip_prosthesis=str(rng.choice(["none", "left", "right"], p=[0.9, 0.05, 0.05])),
        arms=str(rng.choice(["down", "up"], p=[0.35, 0.65])),
        noise_sd_hu=float(rng.uniform(5, 40)),
        detail_seed=int(rng.integers(2**31)),
    )
    cfg = _sample_landmarks(cfg, np.random.default_rng([int(seed), 0x1A4D]))
    spine_drawn = region_arg is None and np.random.default_rng([int(seed), 0x5917]).random() < _SPINE_P
    cfg = _sample_realism(cfg, np.random.default_rng([int(seed), 0x0404]), spine_drawn)
    cfg = cfg.with_overrides(**overrides) if overrides else cfg
    return _centre_on_spine(cfg) if cfg.region == "spine" and "table_top_y_mm" not in overrides else cfg


_FRACTURE_LEVELS = ("T10", "T11", "T12", "L1", "L2", "L3", "L4")
_HARDWARE_STARTS = ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4")


def _sample_landmarks(cfg: PhantomConfig, rng: np.random.Generator) -> PhantomConfig:
    """Landmarks that vary against the spine, and degenerative and post-operative variants (a second stream,
    so the first one's draws stay as they were)."""
    crest = float(rng.normal(0.45, 0.22)) if rng.random() < 0.7 else float(rng.uniform(-0.05, 1.05))
    small = rng.random() < 0.06
    fracture = rng.random() < 0.08
    cement = rng.random() < 0.04
    n_cement = int(rng.integers(1, 3))
    return dataclasses.replace(
        cfg,
        crest_frac=float(np.clip(crest, -0.05, 1.05)),
        crest_asym_mm=float(rng.normal(0, 4)),
        rib_last_frac=float(rng.uniform(0.0, 0.3)) if rng.random() < 0.15 else float(rng.uniform(0.3, 1.4)),
        rib_second_last_frac=float(rng.uniform(0.5, 1.3)),
        rib_slope=float(rng.uniform(0.75, 1.35)),
        rib_radius_scale=float(rng.uniform(0.75, 1.15)),
        kidney_shift=float(rng.uniform(-1.5, 1.0)),
        liver_shift=float(rng.uniform(-1.0, 1.0)),
        femur_drop=float(rng.uniform(0.85, 1.2)),
        pelvis_width=float(rng.uniform(0.85, 1.2)),
        rotation_deg=float(rng.normal(0, 3)) if rng.random() < 0.75 else float(rng.uniform(-15, 15)),
        lean_deg=float(rng.normal(0, 1.5)) if rng.random() < 0.8 else float(rng.uniform(-8, 8)),
        fracture_level=str(rng.choice(_FRACTURE_LEVELS)) if fracture else "",
        fracture_severity=float(rng.uniform(0.2, 0.6)) if fracture else 0.0,
        osteophytes=float(rng.uniform(0.2, 1.0)) if rng.random() < 0.3 else 0.0,
        spinal_hardware=cfg.spinal_hardware or bool(rng.random() < 0.04),
        hardware_start=str(rng.choice(_HARDWARE_STARTS)),
        hardware_levels=int(rng.integers(2, 7)),
        cement_levels=tuple(str(v) for v in rng.choice(_FRACTURE_LEVELS, n_cement, replace=False))
        if cement
        else (),
        contrast_phase=str(rng.choice(["arterial", "portal", "delayed"], p=[0.25, 0.55, 0.2])),
        aorta_calcification=float(rng.uniform(0, 1)) if rng.random() < 0.35 else 0.0,
        skeleton_scale=float(rng.uniform(0.65, 0.85)) if small else cfg.skeleton_scale,
        bone_density=min(cfg.bone_density, 0.9) if small else cfg.bone_density,
        cortical_hu=float(rng.uniform(650, 1500)),
    )


def _sample_realism(cfg: PhantomConfig, rng: np.random.Generator, spine_drawn: bool) -> PhantomConfig:
    """Generator 0.4's fields, on a third stream: contrast strength and the aorta's position, streaks, beam
    hardening, curved tables, cuts through L2-L4 at the edge of ``l3_top`` / ``l3_bottom`` scans, and the
    narrow field of view of a lumbar spine CT."""
    region = "spine" if spine_drawn else cfg.region
    streaks = int(rng.integers(1, 7)) if rng.random() < 0.3 else 0
    cut = rng.random() < 0.5 and region in ("l3_top", "l3_bottom")
    level = str(rng.choice(CUT_LEVELS))
    # the half of L2 or L4 nearer L3, anywhere in L3: the edge stays within ~40 mm of the L3 centre
    frac = float(rng.uniform(*{"L2": (0.4, 0.9), "L3": (0.1, 0.9), "L4": (0.1, 0.6)}[level]))
    spine_fov = float(rng.uniform(130, 180))
    new = dataclasses.replace(
        cfg,
        region=region,
        contrast_scale=float(rng.uniform(0.7, 1.4)),
        aorta_offset_mm=float(rng.uniform(0, 18)),
        streaks=streaks,
        streak_hu=float(rng.uniform(80, 400)) if streaks else 0.0,
        beam_hardening=float(rng.uniform(0, 0.25)) if rng.random() < 0.5 else 0.0,
        cut_level=level if cut else "",
        cut_end="top" if region == "l3_top" else "bottom",
        cut_frac=frac,
        table_edge_hu=float(rng.uniform(150, 700)) if rng.random() < 0.4 else 0.0,
    )
    if region == "spine":  # a bone-kernel lumbar spine CT: small pixels, thin slices, no arms in view
        sp, th = ((0.625, 0.625), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0))[int(rng.integers(4))]
        new = dataclasses.replace(
            new,
            pixel_spacing_mm=spine_fov / new.matrix,
            slice_spacing_mm=sp,
            slice_thickness_mm=th,
            top_margin_mm=float(rng.uniform(-5, 12)),
            bottom_margin_mm=float(rng.uniform(-15, 25)),
            table_edge_hu=0.0,
        )
    return new


def _centre_on_spine(cfg: PhantomConfig) -> PhantomConfig:
    """Move the patient (table and all) so that the L3 body lies at the centre of the field of view, as a
    spine reconstruction is centred (the FOV centre is always (0, 0) here)."""
    l3 = build_spine(cfg).by_name("L3")
    jy, jx = np.random.default_rng([cfg.seed, 0x5C]).normal(0, [5, 4])
    return dataclasses.replace(
        cfg,
        table_top_y_mm=cfg.table_top_y_mm - l3.y - 5.0 + float(jy),
        lateral_offset_mm=cfg.lateral_offset_mm - l3.x + float(jx),
    )
