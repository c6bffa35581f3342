"""Phantom parameters: every random choice is an explicit field, so any variant can be forced.

``l3edge.phantom.sampling.sample_config(seed)`` draws all fields; small anatomical details (bowel loops,
vessel branches, noise) come from ``detail_seed``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from l3edge.errors import UsageError

GENERATOR_VERSION = "0.4"
"""Version of the phantom generator (written into every truth.json; bump it when the pictures change)."""

REGIONS = ("abdomen", "cap", "wholebody", "chest", "l3_top", "l3_bottom", "spine")
"""Scan ranges: abdomen-pelvis, chest-abdomen-pelvis, skull base to mid thigh, chest only (L3 never in view),
abdomen scans whose top (``l3_top``) or bottom (``l3_bottom``) edge lies near the L3 centre (sometimes
just past it, so L3 may be out of view), and a lumbar spine CT (``spine``: a 130-180 mm field of view centred
on the spine, from just below the last rib in that field (mostly in L2; in 10% of seeds below the L3 centre)
to about the top of the sacrum, so no rib is in view)."""

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
