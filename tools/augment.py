"""Training augmentation on model-space HU images (numpy), chosen to mimic real scan-to-scan variation and to
keep the model from relying on the exact textures and shapes of the phantoms.

All transforms act before normalisation, in HU, and move the label rows (one per level) with the image:
- scale / spacing jitter: rows and columns resampled by independent factors (body height and width, and
  errors in the slice or pixel spacing);
- elastic deformation: a smooth random stretch along the rows (vertebrae and discs of other heights, level
  by level) and a smooth sideways shift of each row (a curved or leaning spine);
- slice thickness and resolution: a Gaussian blur along rows, or rows averaged in blocks of 2-3 (thick
  slices, seen at the model's pixel size as steps);
- bone intensity scaling: everything above 150 HU scaled about 150 HU (osteoporotic to dense bone; scanner
  calibration), then an intensity shift of +-70 HU on everything that is not fill (contrast, kVp);
- noise (Gaussian, up to ``noise_hu``: dose) and a Gaussian blur (reconstruction kernel);
- random erasing (patches set to soft tissue or to air) and bright blobs and rods standing in for metal;
- scan-range crop: rows outside a random range set to fill (shorter scans; labels may leave the view);
- horizontal flip (patient orientation errors, situs variants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d, map_coordinates

BONE_FLOOR_HU = 150.0


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths and probabilities; ``enabled=False`` turns everything off."""

    enabled: bool = True
    """Master switch."""
    scale: tuple[float, float] = (0.85, 1.15)
    """Range of the row and column resampling factors."""
    p_scale: float = 0.8
    """Probability of the scale jitter."""
    p_elastic: float = 0.5
    """Probability of the elastic deformation."""
    elastic_px: float = 2.5
    """Largest row displacement of the elastic stretch, model px (about 10 mm at 4 mm/px)."""
    elastic_shift_px: float = 3.0
    """Largest sideways shift of a row, model px."""
    p_thick: float = 0.2
    """Probability of averaging rows in blocks (thick slices)."""
    bone_scale: tuple[float, float] = (0.7, 1.3)
    """Range of the bone intensity factor."""
    p_bone_scale: float = 0.6
    intensity_shift_hu: float = 70.0
    """Maximum absolute HU shift."""
    noise_hu: float = 25.0
    """Maximum Gaussian noise sd in HU."""
    max_blur_px: float = 1.2
    """Maximum Gaussian sd along rows, in model pixels."""
    p_blur2d: float = 0.2
    """Probability of a small isotropic blur (soft reconstruction kernel)."""
    p_erase: float = 0.25
    """Probability of erasing one or two random patches."""
    p_metal: float = 0.15
    """Probability of adding bright blobs or rods (metal)."""
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


def _smooth_field(rng: np.random.Generator, n: int, sigma: float, amplitude: float) -> np.ndarray:
    f = gaussian_filter1d(rng.standard_normal(n + 1), sigma, mode="wrap")
    return amplitude * f / max(float(np.abs(f).max()), 1e-6)


def _elastic(
    img: np.ndarray, rows: np.ndarray, cfg: AugmentConfig, fill: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image row i samples old row ``i + d(i)`` (d smooth, |d'| < 1 so the map stays monotone) shifted
    sideways by ``s(i)``; label row r moves to the i with ``i + d(i) = r``."""
    n, w = img.shape
    sigma = float(rng.uniform(6, 14))
    d = _smooth_field(rng, n, sigma, cfg.elastic_px * float(rng.uniform(0.3, 1.0)))[:n]
    d *= min(1.0, 0.8 / max(float(np.abs(np.diff(d)).max(initial=0.0)), 1e-6))
    s = _smooth_field(rng, n, sigma * 2, cfg.elastic_shift_px * float(rng.uniform(0.0, 1.0)))[:n]
    src_r = np.arange(n) + d
    rr = np.broadcast_to(src_r[:, None], (n, w))
    cc = np.arange(w)[None, :] + s[:, None]
    out = map_coordinates(img, [rr.ravel(), cc.ravel()], order=1, mode="constant", cval=fill)
    new_rows = np.interp(rows, src_r, np.arange(n, dtype=np.float64), left=np.nan, right=np.nan)
    keep = np.isfinite(rows)
    rows = np.where(keep & np.isfinite(new_rows), new_rows, np.where(keep, rows - d.mean(), rows))
    return out.reshape(n, w).astype(np.float32), rows


def _thick_slices(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(2, 4))
    n = img.shape[0]
    off = int(rng.integers(0, k))
    out = img.copy()
    for a in range(-off, n, k):
        lo, hi = max(a, 0), min(a + k, n)
        if hi > lo:
            out[lo:hi] = img[lo:hi].mean(axis=0)
    return out


def _erase(img: np.ndarray, body: np.ndarray, fill: float, rng: np.random.Generator) -> None:
    n, w = img.shape
    for _ in range(int(rng.integers(1, 3))):
        h, ww = int(rng.integers(3, max(4, n // 6))), int(rng.integers(3, max(4, w // 3)))
        r, c = int(rng.integers(0, max(1, n - h))), int(rng.integers(0, max(1, w - ww)))
        patch = body[r : r + h, c : c + ww]
        img[r : r + h, c : c + ww] = np.where(patch, float(rng.uniform(-100, 60)), fill)


def _metal(img: np.ndarray, rng: np.random.Generator) -> None:
    n, w = img.shape
    yy, xx = np.mgrid[0:n, 0:w]
    for _ in range(int(rng.integers(1, 4))):
        r, c = float(rng.uniform(0, n)), float(rng.uniform(0.2 * w, 0.8 * w))
        if rng.random() < 0.5:  # blob (clip, screw head, cement)
            ry, rx = rng.uniform(0.7, 4.0, 2)
            m = ((yy - r) / ry) ** 2 + ((xx - c) / rx) ** 2 <= 1
        else:  # rod along the spine
            length, rx = float(rng.uniform(5, 30)), float(rng.uniform(0.5, 1.2))
            m = (np.abs(xx - c) <= rx) & (yy >= r) & (yy <= r + length)
        img[m] = np.maximum(img[m], float(rng.uniform(1800, 3000)))


def augment(
    image: np.ndarray,
    rows: np.ndarray,
    in_view: np.ndarray,
    fill_hu: float,
    rng: np.random.Generator,
    cfg: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one model-space HU image; returns (image, label rows, labels still in view), one row per level
    (NaN rows stay NaN)."""
    img = np.array(image, dtype=np.float32, copy=True)
    rows = np.array(rows, dtype=np.float64, copy=True)
    in_view = np.array(in_view, dtype=bool, copy=True)
    if not cfg.enabled:
        return img, rows, in_view
    if rng.random() < cfg.p_scale:
        sr, sc = rng.uniform(*cfg.scale, size=2)
        img = _resample_rows(img, sr, fill_hu)
        img = _resample_cols(img, sc, fill_hu)
        rows = (rows + 0.5) * sr - 0.5
    if rng.random() < cfg.p_elastic:
        img, rows = _elastic(img, rows, cfg, fill_hu, rng)
    body = img > fill_hu + 1.0
    if rng.random() < cfg.p_thick:
        img = _thick_slices(img, rng)
    sigma = rng.uniform(0, cfg.max_blur_px) if cfg.max_blur_px > 0 else 0.0
    if sigma > 0.05:
        img = gaussian_filter1d(img, sigma, axis=0, mode="nearest")
    if rng.random() < cfg.p_blur2d:
        img = gaussian_filter(img, float(rng.uniform(0.3, 0.8)), mode="nearest")
    if rng.random() < cfg.p_bone_scale:
        k = np.float32(rng.uniform(*cfg.bone_scale))
        img = np.where(img > BONE_FLOOR_HU, BONE_FLOOR_HU + (img - BONE_FLOOR_HU) * k, img)
    shift = rng.uniform(-cfg.intensity_shift_hu, cfg.intensity_shift_hu)
    noise = rng.normal(0, rng.uniform(0, cfg.noise_hu), size=img.shape).astype(np.float32)
    img = np.where(body, img + shift + noise, fill_hu).astype(np.float32)
    if rng.random() < cfg.p_erase:
        _erase(img, body, fill_hu, rng)
    if rng.random() < cfg.p_metal:
        _metal(img, rng)
    if rng.random() < cfg.p_range_crop:
        n = img.shape[0]
        keep = int(rng.integers(max(1, int(cfg.min_range_frac * n)), n + 1))
        start = int(rng.integers(0, n - keep + 1))
        img[:start] = fill_hu
        img[start + keep :] = fill_hu
        with np.errstate(invalid="ignore"):
            in_view &= (rows >= start) & (rows < start + keep)
    if rng.random() < cfg.p_flip:
        img = img[:, ::-1].copy()
    return img, rows, in_view
