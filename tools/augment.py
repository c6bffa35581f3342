"""Training augmentation on model-space HU images (numpy), chosen to mimic real scan-to-scan variation.

All transforms act before normalisation, in HU, and move the label row with the image:
- scale / spacing jitter: rows and columns resampled by independent factors (body height and width, and
  errors in the slice or pixel spacing);
- slice-thickness blur: a Gaussian along rows (thick slices average several millimetres);
- intensity shift: +-70 HU on everything that is not fill (calibration, contrast, kVp);
- noise: Gaussian, up to ``noise_hu`` (dose);
- scan-range crop: rows outside a random range set to fill (shorter scans; the label may leave the view);
- horizontal flip (patient orientation errors, situs variants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; ``enabled=False`` turns everything off."""

    enabled: bool = True
    """Master switch."""
    scale: tuple[float, float] = (0.85, 1.15)
    """Range of the row and column resampling factors."""
    p_scale: float = 0.8
    """Probability of the scale jitter."""
    intensity_shift_hu: float = 70.0
    """Maximum absolute HU shift."""
    noise_hu: float = 25.0
    """Maximum Gaussian noise sd in HU."""
    max_blur_px: float = 1.0
    """Maximum Gaussian sd along rows, in model pixels."""
    p_range_crop: float = 0.3
    """Probability of simulating a shorter scan."""
    min_range_frac: float = 0.3
    """Shortest kept scan range as a fraction of the scan's rows."""
    p_flip: float = 0.5
    """Probability of a horizontal flip."""


def _resample_rows(image: np.ndarray, factor: float, fill: float) -> np.ndarray:
    n = image.shape[0]
    m = max(1, int(round(n * factor)))
    src = (np.arange(m) + 0.5) / factor - 0.5
    i0 = np.floor(src).astype(np.int64)
    f = (src - i0)[:, None].astype(np.float32)
    a = np.where((i0 >= 0)[:, None] & (i0 < n)[:, None], image[np.clip(i0, 0, n - 1)], fill)
    b = np.where((i0 + 1 >= 0)[:, None] & (i0 + 1 < n)[:, None], image[np.clip(i0 + 1, 0, n - 1)], fill)
    return (a * (1 - f) + b * f).astype(np.float32)


def _resample_cols(image: np.ndarray, factor: float, fill: float) -> np.ndarray:
    """Zoom columns about the image centre, keeping the width."""
    w = image.shape[1]
    c = (w - 1) / 2
    src = (np.arange(w) - c) / factor + c
    i0 = np.floor(src).astype(np.int64)
    f = (src - i0)[None, :].astype(np.float32)
    ok0 = (i0 >= 0) & (i0 < w)
    ok1 = (i0 + 1 >= 0) & (i0 + 1 < w)
    a = np.where(ok0[None], image[:, np.clip(i0, 0, w - 1)], fill)
    b = np.where(ok1[None], image[:, np.clip(i0 + 1, 0, w - 1)], fill)
    return (a * (1 - f) + b * f).astype(np.float32)


def augment(
    image: np.ndarray,
    label_row: float,
    in_view: bool,
    fill_hu: float,
    rng: np.random.Generator,
    cfg: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, float, bool]:
    """Augment one model-space HU image; returns (image, label row, label still in view)."""
    img = np.array(image, dtype=np.float32, copy=True)
    if not cfg.enabled:
        return img, label_row, in_view
    if rng.random() < cfg.p_scale:
        sr, sc = rng.uniform(*cfg.scale, size=2)
        img = _resample_rows(img, sr, fill_hu)
        img = _resample_cols(img, sc, fill_hu)
        label_row = (label_row + 0.5) * sr - 0.5
    body = img > fill_hu + 1.0
    sigma = rng.uniform(0, cfg.max_blur_px) if cfg.max_blur_px > 0 else 0.0
    if sigma > 0.05:
        img = gaussian_filter1d(img, sigma, axis=0, mode="nearest")
    shift = rng.uniform(-cfg.intensity_shift_hu, cfg.intensity_shift_hu)
    noise = rng.normal(0, rng.uniform(0, cfg.noise_hu), size=img.shape).astype(np.float32)
    img = np.where(body, img + shift + noise, fill_hu).astype(np.float32)
    if rng.random() < cfg.p_range_crop:
        n = img.shape[0]
        keep = int(rng.integers(max(1, int(cfg.min_range_frac * n)), n + 1))
        start = int(rng.integers(0, n - keep + 1))
        img[:start] = fill_hu
        img[start + keep :] = fill_hu
        if in_view and not (start <= label_row < start + keep):
            in_view = False
    if rng.random() < cfg.p_flip:
        img = img[:, ::-1].copy()
    return img, label_row, in_view
