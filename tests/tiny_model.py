"""A tiny l3edge IR built with openvino.opset13 (no torch), whose answer is known: a 'bright band detector'.

Input ``mip`` [N, 3, H, 16] (N and H dynamic). One 32x16 convolution with row stride 16 (padding-free, so
the strip and per-window paths agree exactly) computes, per window, from the mean intensity m(r) of each
window row r: ``den = sum_r m(r)`` and ``num = sum_r r * m(r)``. Outputs: offset = num / (den + eps) (the
intensity centroid's row inside the window) and presence logit = 10 * (den - 0.5). A bright band (HU above
100) a few mm thick therefore acts as 'L3': the runtime should report the band's centre.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from l3edge.metadata import RT_INFO_KEY, ModelMetadata, ModelSpace
from l3edge.series import Projection, SeriesInfo

WINDOW_H = 32
WINDOW_W = 16
TINY_SPACE = ModelSpace(
    mm_per_px=4.0,
    window_height_px=WINDOW_H,
    window_width_px=WINDOW_W,
    intensity_windows=((100.0, 1500.0),) * 3,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    fill_hu=-1024.0,
    pad_px=16,
)


def tiny_metadata(output_stride: int | None = 16, name: str = "tiny-band") -> ModelMetadata:
    return ModelMetadata(
        name=name,
        version="0.0.1",
        space=TINY_SPACE,
        output_stride_px=output_stride,
        default_stride_px=4,
        presence_threshold=0.5,
        precision="fp32",
        architecture="band-detector",
        trained_on="nothing (test model)",
    )


def build_tiny_ir(
    padded: bool = False, offset_bias: float = 0.0, level_shifts: tuple[float, ...] = ()
) -> ov.Model:
    """The band detector as an ov.Model (no metadata). ``padded`` adds a 3x3 zero-padded blur in front, which
    makes window borders differ between the strip and per-window paths (like a real CNN). ``offset_bias`` is
    added to the offset output (a refiner whose answer differs from the band centre by a known amount).
    ``level_shifts``: a multi-level model whose level k lies ``level_shifts[k]`` rows below the band (offsets
    of every level, then the band's presence logit once per level)."""
    x = ops.parameter([-1, 3, -1, WINDOW_W], np.float32, name="mip")
    x.output(0).get_tensor().set_names({"mip"})
    h = x.output(0)
    if padded:
        blur = np.zeros((3, 3, 3, 3), np.float32)
        for c in range(3):
            blur[c, c] = 1.0 / 9.0
        h = ops.convolution(h, ops.constant(blur), [1, 1], [1, 1], [1, 1], [1, 1]).output(0)
    rows = np.arange(WINDOW_H, dtype=np.float32).reshape(1, 1, WINDOW_H, 1)
    per_pixel = 1.0 / (3 * WINDOW_W)
    w_num = np.broadcast_to(rows * per_pixel, (1, 3, WINDOW_H, WINDOW_W)).astype(np.float32)
    w_den = np.full((1, 3, WINDOW_H, WINDOW_W), per_pixel, np.float32)
    conv = ops.convolution(
        h, ops.constant(np.concatenate([w_num, w_den])), [16, 1], [0, 0], [0, 0], [1, 1]
    )  # [N, 2, K, 1]
    num = ops.slice(conv, np.array([0]), np.array([1]), np.array([1]), np.array([1]))
    den = ops.slice(conv, np.array([1]), np.array([2]), np.array([1]), np.array([1]))
    offset = ops.divide(num, ops.add(den, ops.constant(np.float32(1e-3))))
    if offset_bias:
        offset = ops.add(offset, ops.constant(np.float32(offset_bias)))
    presence = ops.multiply(ops.subtract(den, ops.constant(np.float32(0.5))), ops.constant(np.float32(10.0)))
    if level_shifts:
        offsets = [ops.add(offset, ops.constant(np.float32(d))) for d in level_shifts]
        out = ops.concat(offsets + [presence] * len(level_shifts), axis=1)
    else:
        out = ops.concat([offset, presence], axis=1)
    return ov.Model([out.output(0)], [x], "tiny_band")


def save_tiny_model(
    path: Path,
    padded: bool = False,
    output_stride: int | None = 16,
    metadata: ModelMetadata | str | None = "default",
    offset_bias: float = 0.0,
    level_shifts: tuple[float, ...] = (),
) -> Path:
    """Write the tiny IR to ``path`` (.xml + .bin).

    ``metadata``: "default" (tiny_metadata), a ModelMetadata, a raw JSON string (for broken metadata), or None
    (no metadata at all)."""
    model = build_tiny_ir(padded, offset_bias, level_shifts)
    if isinstance(metadata, ModelMetadata):
        model.set_rt_info(metadata.to_json(), RT_INFO_KEY)
    elif metadata == "default":
        model.set_rt_info(tiny_metadata(output_stride).to_json(), RT_INFO_KEY)
    elif isinstance(metadata, str):
        model.set_rt_info(metadata, RT_INFO_KEY)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


MULTI_LEVELS = ("L2", "L3", "L4")
MULTI_SHIFTS = (-8.8, 0.0, 9.2)
"""The tiny multi-level model's levels and their rows relative to the band (4 mm rows: about one lumbar
pitch apart, as the ladder expects)."""


def tiny_multilevel_metadata() -> ModelMetadata:
    return dataclasses.replace(tiny_metadata(name="tiny-levels"), levels=MULTI_LEVELS, review_below=0.3)


def save_tiny_multilevel_model(path: Path) -> Path:
    """The band detector placing L2, L3 (the band) and L4 at ``MULTI_SHIFTS`` rows."""
    return save_tiny_model(path, metadata=tiny_multilevel_metadata(), level_shifts=MULTI_SHIFTS)


def tiny_refiner_metadata() -> ModelMetadata:
    """The band detector as a refiner: 1 mm per pixel, L3 expected in the middle half of its window."""
    space = dataclasses.replace(TINY_SPACE, mm_per_px=1.0)
    meta = tiny_metadata(None, "tiny-refiner")
    return dataclasses.replace(meta, space=space, refine_band=(0.25, 0.75), refine_shifts_px=(-4, 0, 4))


def metadata_with_schema(version: int) -> str:
    d = json.loads(tiny_metadata().to_json())
    d["schema_version"] = version
    return json.dumps(d)


def band_volume_z(n_slices: int = 40, spacing_mm: float = 5.0, z_top_mm: float = -100.0) -> np.ndarray:
    """z of each slice, superior first."""
    return z_top_mm - spacing_mm * np.arange(n_slices, dtype=np.float64)


def band_projection(
    band_rows: tuple[int, ...] | None = (20, 21),
    n_slices: int = 40,
    n_cols: int = 64,
    spacing_mm: float = 5.0,
    col_spacing_mm: float = 2.0,
    z_top_mm: float = -100.0,
    band_hu: float = 1000.0,
) -> Projection:
    """In-memory frontal MIP: air everywhere except bright rows ``band_rows`` (superior-first indices)."""
    mip = np.full((n_slices, n_cols), -1000.0, np.float32)
    if band_rows:
        mip[list(band_rows)] = band_hu
    z = band_volume_z(n_slices, spacing_mm, z_top_mm)
    series = SeriesInfo(
        source="phantom",
        path=Path("<band>"),
        series_instance_uid=None,
        slice_files=(),
        slice_index=tuple(range(n_slices - 1, -1, -1)),
        instance_numbers=tuple(range(1, n_slices + 1)),
        sop_instance_uids=tuple(f"1.2.3.{i}" for i in range(n_slices)),
    )
    return Projection(mip_hu=mip, z_mm=z, col_spacing_mm=col_spacing_mm, series=series)
