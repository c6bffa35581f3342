"""HU windows as 8-bit grey pictures: one mapping for the QA picture, its axial thumbnails and the exported
PNG slice (pixels only, no patient data)."""

from __future__ import annotations

import numpy as np
from PIL import Image

SOFT_TISSUE_HU = (40.0 - 200.0, 40.0 + 200.0)
"""Soft-tissue window W400/L40 for axial slices."""


def to_gray(values: np.ndarray, lo: float, hi: float) -> Image.Image:
    """``values`` (HU) in the window [lo, hi] as an 8-bit grey image (below lo black, above hi white)."""
    v = np.clip((np.asarray(values, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
    return Image.fromarray((v * 255.0 + 0.5).astype(np.uint8), mode="L")
