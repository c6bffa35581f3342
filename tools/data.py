"""Training data: scan lists (CSV, phantom folders), labels, model-space presets and the cache format.

The cache is a folder with one ``<id>.npz`` per scan and an ``index.json``. Each npz holds the model-space
image in HU (``to_model_space`` output, unnormalised: normalisation happens at training time with
``normalize`` so the intensity augmentation can work in HU), the patient z of every slice and a ``meta`` JSON
string::

    {"id", "source", "path", "level", "z0_mm", "mm_per_px", "label_z_mm", "label_row", "in_view", "n_slices",
     "region", "variants", "levels_known": [...],
     "vertebrae": {LEVEL: {"z_mm", "z_top_mm", "z_bottom_mm", "row_top", "row_bottom"}}, ...source extras}

The label contract (read by the trainers): ``level``/``label_z_mm``/``label_row``/``in_view`` describe the
level the cache was built for. ``vertebrae`` holds every level whose position is known, rows in this image's
model-space rows; ``z_top_mm``/``z_bottom_mm`` and ``row_top``/``row_bottom`` are None when the body extent is
unknown (labels from a CSV or an npz give a position only). ``levels_known`` is the sorted list of levels
whose presence or absence is known: a level in it but not in ``vertebrae`` is known to be absent from the
scan; a level in neither is unknown. Phantoms know every level of their truth; a labelled CSV or npz row knows
its one level (also when the label is empty: known absent).

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
from tools.truth import inside_scan, vertebra_bounds, vertebra_entries
from tools.truth import label_from_truth as label_from_truth  # re-exported (build_cache, e2e)
from tools.truth import truth_slices as truth_slices

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
    series_uid: str | None = None
    """Read this DICOM series (a reviewed result's); None: the one preferred by its headers."""
    tag: str = ""
    """Part of the id when set (a review's decision), so that a changed label is cached anew."""

    @property
    def scan_id(self) -> str:
        """Stable file-name-safe id: folder/file stem plus a hash of path and level (and tag)."""
        key = f"{self.path.resolve()}|{self.level}" + (f"|{self.tag}" if self.tag else "")
        h = hashlib.sha1(key.encode()).hexdigest()[:10]
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


def label_from_record(record: ScanRecord, proj: Projection) -> tuple[float, bool]:
    """(label z, in view) for a CSV record, resolving slice_index / SOPInstanceUID through ``proj.series``."""
    if record.z_mm is not None:
        return record.z_mm, inside_scan(record.z_mm, proj.z_mm)
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


def _finite_or_none(z: float | None) -> float | None:
    return float(z) if z is not None and math.isfinite(z) else None


def _level_entry(grid: RowGrid, centre: float, top: float | None, bottom: float | None) -> dict[str, Any]:
    top, bottom = _finite_or_none(top), _finite_or_none(bottom)
    return {
        "z_mm": float(centre),
        "z_top_mm": top,
        "z_bottom_mm": bottom,
        "row_top": None if top is None else float(grid.z_to_row(top)),
        "row_bottom": None if bottom is None else float(grid.z_to_row(bottom)),
    }


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
    labels: dict[str, float | None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON metadata stored with a cached scan (the label contract: see the module docstring).

    Levels come from ``truth`` (a phantom: every level of its truth, with the body extent), else from
    ``labels`` (level -> patient z of the labelled position, None when the level is known to be absent), else
    from ``level``/``label_z`` alone (a scan-list row). ``extra`` keys are added as they are (patient,
    orientation, ...)."""
    verts: dict[str, dict[str, Any]] = {}
    if truth:
        entries = vertebra_entries(truth.get("vertebrae"))
        known = set(entries)
        for name in entries:
            b = vertebra_bounds(truth["vertebrae"], name)
            if b is not None:
                verts[name] = _level_entry(grid, b[2], b[0], b[1])
    else:
        if labels is None:
            labels = {level: label_z if math.isfinite(label_z) else None}
        known = {k.upper() for k in labels}
        for name, z in labels.items():
            if z is not None and math.isfinite(z):
                verts[name.upper()] = _level_entry(grid, z, None, None)  # position only: no body extent
    truth = truth or {}
    meta = {
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
        "levels_known": sorted(known),
    }
    meta.update(extra or {})
    return meta


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
