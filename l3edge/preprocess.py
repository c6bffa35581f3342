"""Pure numpy: MIP in HU -> model space -> normalised channels -> windows. Imported by tools/ too.

Model space has isotropic pixels of ``mm_per_px``. Row r of the model-space image is centred at patient
``z = RowGrid.z0_mm - r * mm_per_px`` (row 0 superior); column j is centred at
``x = (j - (W - 1) / 2) * mm_per_px`` from the centre of the original image columns. Resampling averages each
input sample over the output pixel's footprint (a box filter), so slice thickness and pixel spacing
are handled the same way whether the scan is finer or coarser than model space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l3edge.metadata import ModelSpace


@dataclass(frozen=True)
class RowGrid:
    """Maps model-space rows to patient z (mm)."""

    z0_mm: float
    """Patient z of the centre of row 0."""
    mm_per_px: float
    """Row pitch in mm."""

    def row_to_z(self, row: float | np.ndarray) -> float | np.ndarray:
        return self.z0_mm - np.asarray(row, dtype=np.float64) * self.mm_per_px

    def z_to_row(self, z: float | np.ndarray) -> float | np.ndarray:
        return (self.z0_mm - np.asarray(z, dtype=np.float64)) / self.mm_per_px


def _sample_edges(coords: np.ndarray) -> np.ndarray:
    """Edges of the footprints of samples at increasing ``coords`` (midpoints; the ends extended)."""
    if coords.size == 1:
        return np.array([coords[0] - 0.5, coords[0] + 0.5])
    mid = 0.5 * (coords[1:] + coords[:-1])
    return np.concatenate([[2 * coords[0] - mid[0]], mid, [2 * coords[-1] - mid[-1]]])


def box_resample(
    values: np.ndarray, src: np.ndarray, dst: np.ndarray, width: float, fill: float, axis: int = 0
) -> np.ndarray:
    """Average ``values`` (samples at increasing ``src`` along ``axis``) over ``[d - width/2, d + width/2]``.

    Each input sample stands for the interval between the midpoints to its neighbours. Parts of an output
    footprint outside the input's extent count as ``fill``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    edges = _sample_edges(src)
    lengths = np.diff(edges)
    cum = np.concatenate(
        [np.zeros((1,) + v.shape[1:]), np.cumsum(v * lengths.reshape((-1,) + (1,) * (v.ndim - 1)), 0)]
    )
    a = np.clip(dst - width / 2, edges[0], edges[-1])
    b = np.clip(dst + width / 2, edges[0], edges[-1])

    def integral(x: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(lengths) - 1)
        frac = (x - edges[i]) / lengths[i]
        f = frac.reshape((-1,) + (1,) * (v.ndim - 1))
        return cum[i] + f * (cum[i + 1] - cum[i])

    covered = (b - a).reshape((-1,) + (1,) * (v.ndim - 1))
    out = (integral(b) - integral(a) + fill * (width - covered)) / width
    return np.moveaxis(out.astype(np.float32), 0, axis)


def to_model_space(
    mip_hu: np.ndarray, z_mm: np.ndarray, col_spacing_mm: float, space: ModelSpace
) -> tuple[np.ndarray, RowGrid]:
    """Resample a MIP (rows superior -> inferior at ``z_mm``) to model space, padded by ``space.pad_px`` rows.

    Returns the float32 HU image [rows, space.window_width_px] and its RowGrid. The image has at least
    ``window_height_px`` rows (extra fill below when the scan is shorter).
    """
    z = np.asarray(z_mm, dtype=np.float64)
    p = space.mm_per_px
    if z.size > 1 and not np.all(np.diff(z) < 0):
        raise ValueError("z_mm must be strictly decreasing (rows superior -> inferior)")
    half = (abs(z[0] - z[1]) / 2) if z.size > 1 else p / 2
    top = z[0] + half
    bottom = z[-1] - half
    n_rows = max(1, int(np.ceil((top - bottom) / p - 1e-6)))
    total = max(n_rows + 2 * space.pad_px, space.window_height_px)
    grid = RowGrid(z0_mm=float(top - p / 2 + space.pad_px * p), mm_per_px=float(p))
    dst_z = np.asarray(grid.row_to_z(np.arange(total)))
    n_cols = mip_hu.shape[1]
    src_x = (np.arange(n_cols) - (n_cols - 1) / 2) * col_spacing_mm
    dst_x = (np.arange(space.window_width_px) - (space.window_width_px - 1) / 2) * p
    # Only the columns that some output footprint touches are resampled along z (same result, less work).
    reach = dst_x[-1] + p / 2 + col_spacing_mm
    near = np.flatnonzero(np.abs(src_x) <= reach)
    cols = slice(int(near[0]), int(near[-1]) + 1) if near.size else slice(0, n_cols)
    # box_resample wants increasing coordinates: flip rows to z ascending and back.
    rows = box_resample(mip_hu[::-1, cols], z[::-1], dst_z[::-1], p, space.fill_hu, axis=0)[::-1]
    image = box_resample(rows, src_x[cols], dst_x, p, space.fill_hu, axis=1)
    return np.ascontiguousarray(image, dtype=np.float32), grid


def normalize(image_hu: np.ndarray, space: ModelSpace) -> np.ndarray:
    """HU image [..., rows, cols] -> float32 [..., channels, rows, cols]: clip to each window, map to [0, 1],
    subtract the channel mean and divide by its std."""
    chans = []
    for (lo, hi), m, s in zip(space.intensity_windows, space.mean, space.std, strict=True):
        c = (np.clip(image_hu, lo, hi) - lo) / (hi - lo)
        chans.append((c - m) / s)
    return np.stack(chans, axis=-3).astype(np.float32)


def window_tops(n_rows: int, height: int, stride: int) -> np.ndarray:
    """Tops of the windows of ``height`` rows at ``stride`` that fit inside ``n_rows`` rows."""
    if n_rows < height:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_rows - height + 1, stride, dtype=np.int64)


def cut_windows(channels: np.ndarray, tops: np.ndarray, height: int) -> np.ndarray:
    """[C, rows, W] -> [N, C, height, W] windows starting at ``tops``."""
    view = np.lib.stride_tricks.sliding_window_view(channels, height, axis=1)  # [C, R-h+1, W, h]
    return np.ascontiguousarray(view[:, tops].transpose(1, 0, 3, 2))
