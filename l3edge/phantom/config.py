"""Phantom parameters: every random choice is an explicit field, so any variant can be forced.

``sample_config(seed)`` draws all fields from one numpy Generator seeded by ``seed``; ``**overrides`` replace
fields after sampling (e.g. ``sample_config(3, n_ribs=11, n_lumbar=6)``). Small anatomical details (bowel
loops, vessel branches, noise) come from ``detail_seed``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from l3edge.errors import UsageError

GENERATOR_VERSION = "0.4"
"""Version of the phantom generator (written into every truth.json; bump it when the pictures change)."""

REGIONS = ("abdomen", "cap", "wholebody", "chest", "l3_top", "l3_bottom", "spine")
"""Scan ranges: abdomen-pelvis, chest-abdomen-pelvis, skull base to mid thigh, chest only (L3 never in view),
abdomen scans whose top (``l3_top``) or bottom (``l3_bottom``) edge lies near the L3 centre (sometimes
just past it, so L3 may be out of view), and a lumbar spine CT (``spine``: a 130-180 mm field of view centred
on the spine, from just below the last rib in that field (mostly in L2; in 10% of seeds below the L3 centre)
to about the top of the sacrum, so no rib is in view)."""

_REGION_WEIGHTS = (0.34, 0.2, 0.1, 0.12, 0.12, 0.12)
"""Of the first six regions; ``spine`` is drawn on its own stream (``_SPINE_P``) so the others' draws stay."""
_SPINE_P = 0.06
CUT_LEVELS = ("L2", "L3", "L4")
"""Levels that ``l3_top`` / ``l3_bottom`` scans are sometimes cut through (``cut_level``)."""


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that defines one phantom scan. Lengths in mm, intensities in HU."""

    seed: int
    """Seed the config was sampled from (also names the UIDs)."""
    region: str
    """One of REGIONS."""
    matrix: int = 512
    """Rows = columns of each axial slice."""
    pixel_spacing_mm: float = 0.8
    """In-plane pixel spacing (field of view = matrix * pixel_spacing_mm)."""
    slice_spacing_mm: float = 2.5
    """Distance between slice centres."""
    slice_thickness_mm: float = 2.5
    """Nominal thickness; each slice averages the anatomy over it (sub-sampled)."""
    scan_z_range: tuple[float, float] | None = None
    """(z_min, z_max) of the slice centres; None: derived from ``region`` and the margins below."""
    top_margin_mm: float = 20.0
    """Region-specific distance of the scan top from its landmark (see anatomy.scan_range)."""
    bottom_margin_mm: float = 30.0
    """Region-specific distance of the scan bottom from its landmark."""
    l3_z_mm: float = -400.0
    """Patient z of the L3 body centre (sets where the anatomy sits along the table)."""
    lateral_offset_mm: float = 0.0
    """Patient midline x relative to the FOV centre (x = 0)."""
    table_top_y_mm: float = 120.0
    """y of the table top (patient's back rests on it); the FOV centre is y = 0."""
    table_thickness_mm: float = 30.0
    table_shell_hu: float = 100.0
    """HU of the table's thin carbon shell (what the MIP shows outside the body)."""
    table_rails: bool = False
    """Metal/plastic rails along both table edges (bright vertical lines in the MIP)."""
    body_width_scale: float = 1.0
    """Scales the trunk's left-right radius."""
    body_depth_scale: float = 1.0
    """Scales the trunk's anterior-posterior radius (large: obese)."""
    fat_mm: float = 20.0
    """Subcutaneous fat thickness."""
    skeleton_scale: float = 1.0
    """Scales vertebra, rib and pelvis sizes and lengths (patient height)."""
    bone_density: float = 1.0
    """1 normal; ~0.5 osteoporotic (lower cancellous and cortical HU)."""
    cortical_hu: float = 850.0
    cancellous_hu: float = 220.0
    n_ribs: int = 12
    """Rib-bearing (thoracic) vertebrae: 11, 12 or 13."""
    n_lumbar: int = 5
    """Free lumbar vertebrae: 4 (sacralised L5), 5 or 6 (sixth lumbar)."""
    scoliosis_mm: float = 0.0
    """Peak lateral deviation of the spine (0: straight)."""
    scoliosis_phase: float = 0.0
    lordosis_scale: float = 1.0
    iv_contrast: bool = False
    oral_contrast: bool = False
    spinal_hardware: bool = False
    """Pedicle screws and rods over ``hardware_levels`` lumbar levels."""
    hardware_top: int = 2
    """First instrumented lumbar level (1-based) when spinal_hardware."""
    hardware_levels: int = 3
    hip_prosthesis: str = "none"
    """'none', 'left' or 'right'."""
    arms: str = "down"
    """'down' (along the flanks, over the abdomen in the MIP) or 'up' (raised beside the head)."""
    noise_sd_hu: float = 15.0
    """Standard deviation of the (spatially correlated) image noise."""
    detail_seed: int = 0
    """Seeds bowel loops, small vessels and noise."""
    # --- landmarks that vary against the spine (none of them may tell the level by itself) ---
    crest_frac: float = 0.5
    """Top of the iliac crests between the L3/L4 disc (0) and the L5/S1 disc (1) of the last lumbar levels
    (counted from the sacrum: the disc three above S1 to the disc just above it)."""
    crest_asym_mm: float = 0.0
    """Left crest higher than the right by this much."""
    rib_last_frac: float = 1.0
    """Length of the lowest rib pair relative to a typical 12th rib (0: absent, a stub below ~0.3)."""
    rib_second_last_frac: float = 1.0
    """Length of the second-lowest rib pair relative to a typical 11th rib."""
    rib_slope: float = 1.0
    """Steepness of the ribs' descent (1 typical; larger: more oblique, as in expiration or older people)."""
    rib_radius_scale: float = 1.0
    """Rib thickness."""
    kidney_shift: float = 0.0
    """Kidneys' craniocaudal shift in vertebral heights (+ up)."""
    liver_shift: float = 0.0
    """Liver dome and diaphragm shift in vertebral heights (+ up)."""
    femur_drop: float = 1.0
    """Distance from S1 down to the femoral heads, relative to typical."""
    pelvis_width: float = 1.0
    """Pelvic width relative to typical (wider in many women)."""
    rotation_deg: float = 0.0
    """Axial rotation of the patient on the table about the spine (positive: left side up)."""
    lean_deg: float = 0.0
    """Tilt of the body axis in the coronal plane (the spine runs obliquely across the MIP)."""
    fracture_level: str = ""
    """A compressed vertebral body (e.g. 'L1'); empty: none."""
    fracture_severity: float = 0.0
    """Height lost by the fractured body (0.2 mild .. 0.6 severe)."""
    osteophytes: float = 0.0
    """Degenerative spurs at the lumbar and lower thoracic endplates (0 none .. 1 severe; > 0.7 bridges
    discs)."""
    hardware_start: str = ""
    """First instrumented level when spinal_hardware (any of T9..L5; empty: the config's lumbar default)."""
    cement_levels: tuple[str, ...] = ()
    """Vertebral bodies filled with vertebroplasty cement."""
    contrast_phase: str = "portal"
    """With iv_contrast: 'arterial' (bright aorta), 'portal' (liver, spleen, veins) or 'delayed' (kidneys'
    collecting systems, ureters and bladder bright)."""
    aorta_calcification: float = 0.0
    """Calcified plaques along the aorta and iliac arteries (0 none .. 1 heavy)."""
    # --- generator 0.4: contrast over the spine, artefacts, scan ends ---
    contrast_scale: float = 1.0
    """Enhancement of vessels and kidneys relative to typical for the phase (0.7 weak .. 1.4 strong bolus)."""
    aorta_offset_mm: float = 8.0
    """Aorta centre left of the vertebral midline (0: straight over the spine; the cava lies to the right)."""
    streaks: int = 0
    """Slices crossed by bright streak artefacts (photon starvation, metal, dense contrast)."""
    streak_hu: float = 0.0
    """Peak HU that a streak adds inside the body."""
    beam_hardening: float = 0.0
    """Fraction of bone HU lost at the centre of the body (cupping; 0 none .. 0.25 a thick patient)."""
    cut_level: str = ""
    """A vertebra that the scan's ``cut_end`` edge cuts through (empty: the region's own range)."""
    cut_end: str = "bottom"
    """'top' or 'bottom': which edge of the scan ``cut_level`` moves."""
    cut_frac: float = 0.5
    """Where the cut lies inside the body: 0 at its top endplate, 1 at its bottom endplate."""
    table_edge_hu: float = 0.0
    """HU of the curved table's raised side walls (bright vertical lines in the MIP; 0: a flat table)."""

    def with_overrides(self, **overrides: object) -> PhantomConfig:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise UsageError(
                f"unknown phantom option(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]

    @property
    def variants(self) -> list[str]:
        """Labels of the non-default choices (anatomical variants and confounders)."""
        v = []
        if self.n_ribs != 12:
            v.append(f"ribs{self.n_ribs}")
        if self.n_lumbar == 4:
            v.append("lumbar4_sacralised_l5")
        elif self.n_lumbar == 6:
            v.append("lumbar6")
        if self.scoliosis_mm >= 5:
            v.append("scoliosis")
        if self.bone_density < 0.75:
            v.append("osteoporosis")
        for flag in ("iv_contrast", "oral_contrast", "spinal_hardware", "table_rails"):
            if getattr(self, flag):
                v.append(flag)
        if self.hip_prosthesis != "none":
            v.append(f"hip_prosthesis_{self.hip_prosthesis}")
        if self.arms == "up":
            v.append("arms_up")
        if self.rib_last_frac < 0.3:
            v.append("short_last_ribs")
        if self.crest_frac < 0.15 or self.crest_frac > 0.85:
            v.append("crest_" + ("high" if self.crest_frac < 0.15 else "low"))
        if abs(self.rotation_deg) >= 8:
            v.append("rotated")
        if abs(self.lean_deg) >= 4:
            v.append("leaning")
        if self.fracture_level:
            v.append("compression_fracture")
        if self.osteophytes > 0.7:
            v.append("bridging_osteophytes")
        if self.cement_levels:
            v.append("vertebroplasty")
        if self.aorta_calcification > 0.5:
            v.append("calcified_aorta")
        if self.skeleton_scale < 0.8:
            v.append("small_patient")
        if self.iv_contrast and self.contrast_phase != "portal":
            v.append(f"contrast_{self.contrast_phase}")
        if self.streaks:
            v.append("streaks")
        if self.beam_hardening >= 0.1:
            v.append("beam_hardening")
        if self.cut_level:
            v.append(f"cut_{self.cut_end}_{self.cut_level}")
        return v


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
    from l3edge.phantom.levels import build_spine  # levels imports this module

    l3 = build_spine(cfg).by_name("L3")
    jy, jx = np.random.default_rng([cfg.seed, 0x5C]).normal(0, [5, 4])
    return dataclasses.replace(
        cfg,
        table_top_y_mm=cfg.table_top_y_mm - l3.y - 5.0 + float(jy),
        lateral_offset_mm=cfg.lateral_offset_mm - l3.x + float(jx),
    )
