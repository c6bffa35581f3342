"""Training data: scan lists (CSV, phantom folders), labels, model-space presets and the cache format.

The cache is a folder with one ``<id>.npz`` per scan and an ``index.json``. Each npz holds the model-space
image in HU (``to_model_space`` output, unnormalised: normalisation happens at training time with
``normalize`` so the intensity augmentation can work in HU), the patient z of every slice and a ``meta`` JSON
string::

    {"id", "source", "path", "level", "z0_mm", "mm_per_px", "label_z_mm", "label_row", "in_view", "n_slices",
     "region", "variant", "vertebrae": {level: {"z_top_mm", "z_bottom_mm", "row_top", "row_bottom"}}}

Label conventions of the scan-list CSV (one row per scan, ``path`` plus at most one label column): ``z_mm``
(patient z of the L3 slice, DICOM LPS / NIfTI converted to the same axis), ``slice_index`` (0-based index in
z-ascending, feet -> head order for DICOM; the file's third-axis index for NIfTI: the convention of
``SeriesInfo.slice_index``), or ``sop_instance_uid`` (of the L3 slice). All label columns empty: the vertebra
is not in the scan. Optional ``level`` (default ``L3``) targets another vertebra.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import InputError, UsageError
from l3edge.metadata import ModelSpace
from l3edge.preprocess import RowGrid
from l3edge.series import Projection

CACHE_FORMAT = 1
INDEX_NAME = "index.json"
TRUTH_NAME = "truth.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHANNEL_PRESETS: dict[str, tuple[tuple[float, float], ...]] = {
    # The seed's bone window replicated to three channels (ImageNet-pretrained trunks expect RGB).
    "bone": ((100.0, 1500.0),) * 3,
    # Bone as above; soft tissue (W400/L40: muscle, organs, contrast); wide (-1000..2000: body outline,
    # lungs, metal).
    "windows": ((100.0, 1500.0), (-160.0, 240.0), (-1000.0, 2000.0)),
}


def default_space(
    channels: str = "bone",
    mm_per_px: float = 4.0,
    window_height_px: int = 80,
    window_width_px: int = 64,
    pad_px: int = 80,
) -> ModelSpace:
    """The default model space (4 mm/px, 80 x 64 px windows) with the ``bone`` or ``windows`` channels."""
    try:
        windows = CHANNEL_PRESETS[channels]
    except KeyError:
        raise UsageError(
            f"unknown channel preset {channels!r}; choose one of {sorted(CHANNEL_PRESETS)}"
        ) from None
    return ModelSpace(
        mm_per_px=mm_per_px,
        window_height_px=window_height_px,
        window_width_px=window_width_px,
        intensity_windows=windows,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        fill_hu=-1024.0,
        pad_px=pad_px,
    )


@dataclass(frozen=True)
class ScanRecord:
    """One scan to cache and how its label is given (at most one of the three label fields is set)."""

    path: Path
    """DICOM folder, NIfTI file or phantom folder."""
    z_mm: float | None = None
    """Patient z of the labelled slice."""
    slice_index: int | None = None
    """0-based index of the labelled slice (``SeriesInfo.slice_index`` convention)."""
    sop_instance_uid: str | None = None
    """SOPInstanceUID of the labelled slice."""
    level: str = "L3"
    """Vertebra the label refers to."""
    phantom: bool = False
    """The folder holds a ``truth.json`` written by ``l3edge.phantom.write_phantom``: labels come from it."""

    @property
    def scan_id(self) -> str:
        """Stable file-name-safe id: folder/file stem plus a hash of path and level."""
        h = hashlib.sha1(f"{self.path.resolve()}|{self.level}".encode()).hexdigest()[:10]
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.path.name)[:40] or "scan"
        return f"{stem}-{h}"


def _cell(row: dict[str, str | None], key: str) -> str | None:
    v = row.get(key)
    v = v.strip() if isinstance(v, str) else None
    return v or None


def read_scan_list(csv_path: str | Path, default_level: str = "L3") -> list[ScanRecord]:
    """Parse a scan-list CSV (see the module docstring). Relative paths are relative to the CSV's folder."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = [h.strip() for h in (rows[0].keys() if rows else [])]
    except OSError as exc:
        raise InputError(f"cannot read scan list {csv_path}: {exc.strerror}") from exc
    if not rows:
        raise InputError(f"scan list {csv_path} has no rows")
    if "path" not in header:
        raise InputError(f"scan list {csv_path} needs a 'path' column (found {header})")
    records = []
    for n, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in raw.items()}
        path_s = _cell(row, "path")
        if path_s is None:
            raise InputError(f"{csv_path} line {n}: empty path")
        path = Path(path_s)
        if not path.is_absolute():
            path = csv_path.parent / path
        labels = {k: _cell(row, k) for k in ("z_mm", "slice_index", "sop_instance_uid")}
        given = [k for k, v in labels.items() if v is not None]
        if len(given) > 1:
            raise InputError(f"{csv_path} line {n}: give one label column, not {given}")
        try:
            z = float(labels["z_mm"]) if labels["z_mm"] is not None else None
            idx = int(labels["slice_index"]) if labels["slice_index"] is not None else None
        except ValueError as exc:
            raise InputError(f"{csv_path} line {n}: label is not a number ({exc})") from exc
        if z is not None and not math.isfinite(z):
            raise InputError(f"{csv_path} line {n}: z_mm must be finite")
        if idx is not None and idx < 0:
            raise InputError(f"{csv_path} line {n}: slice_index must be >= 0")
        level = (_cell(row, "level") or default_level).upper()
        phantom = not given and (path / TRUTH_NAME).is_file()
        records.append(ScanRecord(path, z, idx, labels["sop_instance_uid"], level, phantom))
    return records


def discover_phantoms(folder: str | Path, level: str = "L3") -> list[ScanRecord]:
    """A phantom folder (with truth.json), or a folder of phantom folders, as records."""
    folder = Path(folder)
    if (folder / TRUTH_NAME).is_file():
        return [ScanRecord(folder, level=level, phantom=True)]
    found = sorted(p.parent for p in folder.glob(f"*/{TRUTH_NAME}"))
    return [ScanRecord(p, level=level, phantom=True) for p in found]


def gather_records(inputs: list[str | Path], level: str = "L3") -> list[ScanRecord]:
    """Scan lists (.csv) and phantom folders -> records, in the order given."""
    records: list[ScanRecord] = []
    for item in inputs:
        p = Path(item)
        if p.suffix.lower() == ".csv":
            records += read_scan_list(p, level)
        elif p.is_dir():
            found = discover_phantoms(p, level)
            if not found:
                raise InputError(
                    f"{p} has no {TRUTH_NAME} (nor do its sub-folders); list real scans in a CSV"
                )
            records += found
        else:
            raise InputError(f"{p} is neither a scan-list CSV nor a phantom folder")
    return records


# --- truth (phantoms) -------------------------------------------------------------------------------------


def _vertebra_entries(vertebrae: Any) -> dict[str, dict[str, Any]]:
    """Truth ``vertebrae`` as {level: dict}; accepts a mapping or a list of dicts/objects with a name."""
    if vertebrae is None:
        return {}
    if isinstance(vertebrae, dict):
        items = vertebrae.items()
    else:
        items = []
        for v in vertebrae:
            d = v if isinstance(v, dict) else getattr(v, "to_dict", lambda v=v: vars(v))()
            items.append((d.get("name") or d.get("level") or d.get("label"), d))
    out = {}
    for k, v in items:
        d = v if isinstance(v, dict) else getattr(v, "to_dict", lambda v=v: vars(v))()
        out[str(k).upper()] = dict(d)
    return out


def _get(d: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        if d.get(k) is not None:
            return float(d[k])
    return None


def vertebra_bounds(vertebrae: Any, level: str) -> tuple[float, float, float] | None:
    """(z_top, z_bottom, z_centre) in mm of ``level`` in a truth ``vertebrae`` entry, None if absent."""
    d = _vertebra_entries(vertebrae).get(level.upper())
    if d is None:
        return None
    top = _get(d, "z_top_mm", "z_top", "top_z_mm", "z_superior_mm")
    bottom = _get(d, "z_bottom_mm", "z_bottom", "bottom_z_mm", "z_inferior_mm")
    centre = _get(d, "z_mm", "z_center_mm", "z_centre_mm", "z_center", "z")
    if centre is None and top is not None and bottom is not None:
        centre = 0.5 * (top + bottom)
    if centre is None:
        return None
    return (top if top is not None else math.nan, bottom if bottom is not None else math.nan, centre)


def label_from_truth(truth: dict[str, Any], level: str, z_mm: np.ndarray) -> tuple[float, bool]:
    """(label z, in view) for ``level`` from a phantom truth dict (``l3edge.phantom.Truth.to_dict()``)."""
    if level.upper() == "L3" and "l3_in_view" in truth:
        z = truth.get("l3_z_mm")
        if z is None:
            z = truth.get("l3_z_true_mm")
        return (float(z) if z is not None else math.nan), bool(truth["l3_in_view"])
    entry = _vertebra_entries(truth.get("vertebrae")).get(level.upper())
    b = vertebra_bounds(truth.get("vertebrae"), level)
    if b is None or entry is None:
        return math.nan, False
    in_view = entry.get("in_view")
    return b[2], bool(in_view) if in_view is not None else _inside(b[2], z_mm)


def truth_slices(truth: dict[str, Any] | None) -> np.ndarray | None:
    """Slice centres (superior first) of the simulated scan, from a phantom truth; None if it lacks them.

    The fast phantom path samples its MIP rows finer than the simulated slices, so errors in slices must be
    counted on these, not on the MIP rows."""
    if not truth:
        return None
    try:
        lo, hi = (float(v) for v in truth["scan_z_range"])
        n, dz = int(truth["n_slices"]), float(truth["slice_spacing_mm"])
    except (KeyError, TypeError, ValueError):
        return None
    if n < 1 or dz <= 0 or abs((hi - lo) - (n - 1) * dz) > 0.01 * dz + 1e-6:
        return None
    return hi - dz * np.arange(n)


def _inside(z: float, z_mm: np.ndarray) -> bool:
    """``z`` within the scanned range (half a slice beyond the outer slice centres)."""
    z_mm = np.asarray(z_mm, dtype=np.float64)
    half = abs(z_mm[0] - z_mm[1]) / 2 if z_mm.size > 1 else 0.5
    return bool(z_mm.min() - half <= z <= z_mm.max() + half)


def label_from_record(record: ScanRecord, proj: Projection) -> tuple[float, bool]:
    """(label z, in view) for a CSV record, resolving slice_index / SOPInstanceUID through ``proj.series``."""
    if record.z_mm is not None:
        return record.z_mm, _inside(record.z_mm, proj.z_mm)
    if record.slice_index is None and record.sop_instance_uid is None:
        return math.nan, False
    s = proj.series
    if s is None:
        raise InputError(f"{record.path}: the reader gave no slice list; label this scan with z_mm")
    if record.slice_index is not None:
        hits = [i for i, v in enumerate(s.slice_index) if v == record.slice_index]
        what = f"slice_index {record.slice_index}"
    else:
        hits = [i for i, v in enumerate(s.sop_instance_uids) if v == record.sop_instance_uid]
        what = "the labelled SOPInstanceUID"
    if not hits:
        raise InputError(f"{record.path}: {what} is not among the {proj.n_slices} slices read")
    return float(proj.z_mm[hits[0]]), True


# --- cache ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedScan:
    """One cached scan in model space (HU, unnormalised)."""

    id: str
    """Cache id (file stem)."""
    image: np.ndarray
    """float32 [rows, window_width_px] model-space HU image, padded by ``pad_px`` rows."""
    grid: RowGrid
    """Row <-> patient z of ``image``."""
    z_slices: np.ndarray
    """float64 [n_slices]: patient z of every slice of the scan, superior first."""
    label_z_mm: float
    """Patient z of the labelled vertebra (NaN when unknown)."""
    in_view: bool
    """The labelled vertebra is inside the scan."""
    meta: dict[str, Any] = field(default_factory=dict)
    """The rest of the cache metadata (region, variant, vertebrae rows, source...)."""

    @property
    def label_row(self) -> float:
        return float(self.grid.z_to_row(self.label_z_mm)) if math.isfinite(self.label_z_mm) else math.nan

    def truth_slice(self) -> int | None:
        """Index (superior-first row order) of the slice nearest the label, None when not in view."""
        if not self.in_view or not math.isfinite(self.label_z_mm):
            return None
        return int(np.argmin(np.abs(self.z_slices - self.label_z_mm)))


def make_meta(
    scan_id: str,
    source: str,
    path: str,
    level: str,
    grid: RowGrid,
    z_slices: np.ndarray,
    label_z: float,
    in_view: bool,
    truth: dict[str, Any] | None,
) -> dict[str, Any]:
    """The JSON metadata stored with a cached scan."""
    verts = {}
    for name in _vertebra_entries((truth or {}).get("vertebrae")):
        b = vertebra_bounds(truth["vertebrae"], name) if truth else None
        if b is not None:
            top, bottom, centre = b
            verts[name] = {
                "z_top_mm": top,
                "z_bottom_mm": bottom,
                "z_mm": centre,
                "row_top": float(grid.z_to_row(top)) if math.isfinite(top) else None,
                "row_bottom": float(grid.z_to_row(bottom)) if math.isfinite(bottom) else None,
            }
    truth = truth or {}
    return {
        "id": scan_id,
        "source": source,
        "path": path,
        "level": level,
        "z0_mm": grid.z0_mm,
        "mm_per_px": grid.mm_per_px,
        "label_z_mm": label_z if math.isfinite(label_z) else None,
        "label_row": float(grid.z_to_row(label_z)) if math.isfinite(label_z) else None,
        "in_view": bool(in_view),
        "n_slices": int(z_slices.size),
        "region": truth.get("region"),
        "variants": list(truth.get("variants") or []),
        "vertebrae": verts,
    }


def save_cached(
    folder: Path, meta: dict[str, Any], image: np.ndarray, z_slices: np.ndarray, dtype: str
) -> Path:
    """Write one scan atomically (``<id>.npz``)."""
    img = np.clip(np.rint(image), -32768, 32767).astype(np.int16) if dtype == "int16" else image.astype(dtype)
    out = folder / f"{meta['id']}.npz"
    tmp = folder / f".{meta['id']}.tmp.npz"
    np.savez_compressed(
        tmp, image=img, z_slices=np.asarray(z_slices, np.float64), meta=np.array(json.dumps(meta))
    )
    tmp.replace(out)
    return out


def read_meta(npz_path: Path) -> dict[str, Any]:
    with np.load(npz_path) as z:
        return json.loads(str(z["meta"]))


def load_scan(npz_path: Path) -> CachedScan:
    with np.load(npz_path) as z:
        meta = json.loads(str(z["meta"]))
        image = z["image"].astype(np.float32)
        z_slices = z["z_slices"].astype(np.float64)
    label = meta.get("label_z_mm")
    return CachedScan(
        id=meta["id"],
        image=image,
        grid=RowGrid(float(meta["z0_mm"]), float(meta["mm_per_px"])),
        z_slices=z_slices,
        label_z_mm=float(label) if label is not None else math.nan,
        in_view=bool(meta["in_view"]),
        meta=meta,
    )


def read_index(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path} not found: build the cache with python -m tools.build_cache") from exc
    if index.get("format") != CACHE_FORMAT:
        raise InputError(
            f"{path} has cache format {index.get('format')!r}, expected {CACHE_FORMAT}; rebuild it"
        )
    return index


def load_cache(folder: str | Path, ids: list[str] | None = None) -> tuple[ModelSpace, list[CachedScan]]:
    """Model space and cached scans (all, or ``ids`` in that order)."""

    folder = Path(folder)
    index = read_index(folder)
    known = [s["id"] for s in index["scans"]]
    if ids is not None:
        missing = sorted(set(ids) - set(known))
        if missing:
            raise UsageError(f"{len(missing)} scan ids not in {folder} (e.g. {missing[0]})")
        known = list(ids)
    scans = [load_scan(folder / f"{i}.npz") for i in known]
    return ModelSpace.from_dict(index["space"]), scans
