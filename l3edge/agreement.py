"""Pure numpy: is a level wholly in the scan, and does its answer survive cropping the scan at either end?

**A whole level.** A vertebra that the scan's first or last slice cuts through cannot be measured, so a level
is reported found only when its centre lies at least half a body height inside the scan's first and last
slice. The body height is a share of the level's pitch (centre to centre, from the ladder at the patient's
scale): adult lumbar bodies are 25-30 mm high and their discs about 10 mm (L3: a 27 mm body in a 37 mm pitch),
lower thoracic bodies 20-24 mm with 6-8 mm discs; both give a body of about 0.72 of the pitch
(``BODY_OF_PITCH``).

**Stability under cropping.** Where a scan happens to end should not change which vertebra is called L3. The
ladder is therefore placed again on the same model-space image cropped at each end: the first (head) or last
(foot) ``CROP_MM`` of the scan's rows are replaced by the padding the model sees beyond a scan's end, so a
crop keeps the rows and the grid of the full image and goes through the model in the same batch. A crop counts
for a level only when the level stays wholly in the cropped scan with ``KEEP_MARGIN_MM`` to spare. The crop's
answer (refined like the full one) is compared with the full answer in units of the level's pitch: the largest
such shift lowers the confidence (``crop_factor``), and a crop that puts the level more than ``LEVEL_SHIFT``
pitches away, or loses it, names another vertebra: the result asks for review.
"""

from __future__ import annotations

import math

import numpy as np

from l3edge.preprocess import RowGrid

BODY_OF_PITCH = 0.72
"""Vertebral body height as a share of the level's centre-to-centre pitch (see the module docstring)."""
CROP_MM = 40.0
"""How much each crop takes off its end of the scan."""
MIN_LEFT_MM = 160.0
"""A scan shorter than ``CROP_MM`` plus this is not cropped (too little would be left to count on)."""
KEEP_MARGIN_MM = 10.0
"""A crop is compared for a level only when the level's centre stays half a body height plus this inside
it."""
CROP_SD_PITCH = 0.15
"""Shift (in pitches) between the full and a cropped answer at which the confidence falls to 0.61 (chosen
on the validation phantoms among 0.08-0.25: AUROC 0.85-0.87, best at 0.15)."""
LEVEL_SHIFT = 0.5
"""A crop answer more than this many pitches from the full one names another vertebra (review)."""
LOST = math.inf
"""The shift recorded when a crop that keeps the level does not find it."""


def cut_end(z: float, z_slices: np.ndarray, pitch_mm: float) -> str | None:
    """``"head"`` or ``"foot"`` when the body centred at ``z`` is cut by that end of the scan, else None (the
    body wholly inside, or wholly beyond the end). The centre itself may lie beyond the end.

    ``z_slices``: patient z of the slices, superior first (the head end is the largest z)."""
    if z_slices.size == 0:
        return None
    half = 0.5 * BODY_OF_PITCH * pitch_mm
    top, bottom = float(np.max(z_slices)), float(np.min(z_slices))
    if -half < top - z < half:
        return "head"
    if -half < z - bottom < half:
        return "foot"
    return None


def crop_images(
    channels: np.ndarray, grid: RowGrid, z_slices: np.ndarray, fill: np.ndarray
) -> dict[str, np.ndarray]:
    """The model-space image with ``CROP_MM`` of the scan cut off its head end and off its foot end (keys
    ``head``, ``foot``); empty when the scan is too short to crop.

    Args: channels: normalised image [C, rows, W]. grid: its RowGrid. z_slices: the scan's slice z's.
    fill: the normalised padding value per channel [C] (what the model sees beyond a scan's end)."""
    if z_slices.size < 2:
        return {}
    top, bottom = float(np.max(z_slices)), float(np.min(z_slices))
    if top - bottom < CROP_MM + MIN_LEFT_MM:
        return {}
    row_z = np.asarray(grid.row_to_z(np.arange(channels.shape[1])), dtype=np.float64)
    out = {}
    for end, cut in (("head", row_z > top - CROP_MM), ("foot", row_z < bottom + CROP_MM)):
        img = channels.copy()
        img[:, cut, :] = np.asarray(fill, dtype=channels.dtype)[:, None, None]
        out[end] = img
    return out


def crop_keeps(end: str, z: float, z_slices: np.ndarray, pitch_mm: float) -> bool:
    """Whether the crop at ``end`` keeps the body centred at ``z`` wholly in view, with the margin."""
    need = 0.5 * BODY_OF_PITCH * pitch_mm + KEEP_MARGIN_MM
    if end == "head":
        return float(np.max(z_slices)) - CROP_MM - z >= need
    return z - float(np.min(z_slices)) - CROP_MM >= need


def crop_shift(z: float, z_crops: list[float | None], pitch_mm: float) -> float:
    """Largest |crop answer - full answer| in pitches over the crops that keep the level (``None``: the crop
    did not find it, ``LOST``); NaN when no crop keeps the level."""
    if not z_crops:
        return math.nan
    return max(LOST if zc is None else abs(zc - z) / pitch_mm for zc in z_crops)


def crop_factor(shift_pitch: float) -> float:
    """Confidence factor for a crop shift in pitches (1 when no crop could be compared)."""
    if not math.isfinite(shift_pitch):
        return 1.0 if math.isnan(shift_pitch) else 0.0
    return math.exp(-0.5 * (shift_pitch / CROP_SD_PITCH) ** 2)
