"""Precomputed frontal MIPs as training data: the public L3 dataset's npz and CSV manifests of MIP files.

**The public L3 dataset** (Kanavati et al. 2018, published beside the sarcopenia-ai code) is one ``.npz``
loaded with ``allow_pickle=True`` (it holds pickled objects: load only a file you trust) with the keys

- ``images_f``: frontal MIPs in HU, one 2-D array per scan, one row per slice in the order the file stores
  them (which end is the head is not documented: see tools/orientation.py), one column per in-plane pixel;
- ``images_s``: sagittal MIPs (not used: l3edge works on the frontal MIP);
- ``spacings``: per scan, index 0 the in-plane spacing along the MIP's columns and index 2 the slice spacing
  along z (the rows), in mm;
- ``names``: per scan (kept in the cache metadata as ``name``/``patient`` so folds can be split by patient;
  never logged);
- ``ydata``: a 0-d object array holding a dict annotator -> array of L3 rows (one per scan, rows of the stored
  MIP). The label is the mean over the annotators that give one (NaN: no label from that annotator); no
  annotator: L3 known absent.

**A manifest** is a CSV with one row per MIP: ``image`` (a ``.npy`` of HU, or a 16-bit PNG whose value
minus ``hu_offset`` (column, or ``--png-hu-offset``) is HU; relative to the CSV), ``mm_per_row``,
``mm_per_col``, and the labels as either ``row`` (with an optional ``level`` column, default ``--level``)
or one ``<LEVEL>_row`` column per level (``L1_row``, ``L3_row``, ...; the multi-level form). Rows are
0-based rows of the stored image (fractions allowed); an empty cell is a level known to be absent.
Optional ``patient`` groups scans for folds. Row 0 is the head end unless an orientation flag says otherwise.

Every MIP goes through the runtime's own model-space preprocessing (``l3edge.preprocess.to_model_space``) as
an ``l3edge.series.Projection`` built from the array, with no volume: rows are put superior first (flipped
when the file stores the head last) at z = -row * mm_per_row, so row 0 (the head end) is at z = 0 mm.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import InputError, UsageError
from l3edge.metadata import ModelSpace
from l3edge.preprocess import to_model_space
from l3edge.series import Projection
from tools.data import make_meta, save_cached

ORIENTATIONS = ("head-first", "head-last")
NPZ_SOURCE = "l3-npz"
MANIFEST_SOURCE = "mip-csv"
_LEVEL_COLUMN = re.compile(r"^([A-Za-z]{1,2}\d{1,2})_row$")


@dataclass(frozen=True)
class MipScan:
    """One precomputed frontal MIP with its labels (in rows of the stored image)."""

    scan_id: str
    """Cache id (file-name safe, no patient name)."""
    source: str
    """``l3-npz`` or ``mip-csv``."""
    origin: str
    """The input file (npz or manifest); orientation is decided per origin."""
    path: str
    """Where the MIP is: ``<npz>#<index>`` or the image file."""
    mm_per_row: float
    mm_per_col: float
    level: str
    """The level the cache is built for (its label is ``label_z_mm`` of the cache)."""
    rows: dict[str, float | None]
    """Level -> labelled row of the stored image (None: the level is known to be absent)."""
    image: np.ndarray | None = None
    """The stored MIP (HU) when it came with the file; else read from ``path``."""
    hu_offset: float = 0.0
    """Subtracted from a PNG's values to get HU."""
    name: str | None = None
    patient: str | None = None
    """Folds keep a patient's scans together (default: the scan is its own patient)."""
    annotator_rows: dict[str, float | None] = field(default_factory=dict)
    orientation: str = "head-first"
    """``head-first``: stored row 0 is the superior end; ``head-last``: the file stores the head last."""
    orientation_by: str = "default"
    """How the orientation was chosen: ``flag``, ``default`` (a manifest: head first), ``detected: ...``."""
    orientation_scores: dict[str, float] | None = None
    """The detector's confidence in each orientation, when it ran."""

    def load(self) -> np.ndarray:
        """The stored MIP as float32 HU [rows, cols] (InputError when it is not a finite 2-D image)."""
        mip = self.image if self.image is not None else read_image(Path(self.path), self.hu_offset)
        mip = np.asarray(mip)
        if mip.ndim != 2 or min(mip.shape) < 2:
            raise InputError(f"{self.path}: a frontal MIP must be a 2-D image, got shape {mip.shape}")
        if not np.issubdtype(mip.dtype, np.number) or np.issubdtype(mip.dtype, np.complexfloating):
            raise InputError(f"{self.path}: MIP values must be real numbers (HU), not {mip.dtype}")
        mip = mip.astype(np.float32)
        if not np.all(np.isfinite(mip)):
            raise InputError(f"{self.path}: the MIP has NaN or infinite values")
        return mip

    def superior_row(self, row: float, n_rows: int) -> float:
        """A stored row as a row counted from the superior end."""
        return float(row) if self.orientation == "head-first" else float(n_rows - 1 - row)

    def projection(self, mip: np.ndarray, orientation: str | None = None) -> Projection:
        """``mip`` (stored order) as a Projection: superior row first, z = -row * mm_per_row."""
        o = orientation or self.orientation
        rows = mip if o == "head-first" else mip[::-1]
        z = -self.mm_per_row * np.arange(rows.shape[0], dtype=np.float64)
        return Projection(np.ascontiguousarray(rows, dtype=np.float32), z, float(self.mm_per_col))

    def oriented(self, orientation: str, by: str, scores: dict[str, float] | None = None) -> MipScan:
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, not {orientation!r}")
        return dataclasses.replace(
            self, orientation=orientation, orientation_by=by, orientation_scores=scores
        )

    @property
    def has_label(self) -> bool:
        """Some level is labelled present (such scans vote on the orientation)."""
        return any(r is not None for r in self.rows.values())


def read_image(path: Path, hu_offset: float = 0.0) -> np.ndarray:
    """A ``.npy`` of HU, or a 16-bit grayscale PNG (value - ``hu_offset`` = HU)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise InputError(
                        f"{path}: PNG mode {im.mode} is not 16-bit grayscale; 8-bit or colour PNGs lose "
                        "the HU values: save the MIP as a 16-bit PNG or a .npy"
                    )
                return np.asarray(im, dtype=np.float64) - hu_offset
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the MIP ({exc})") from exc
    raise InputError(f"{path}: a MIP must be a .npy (HU) or a 16-bit .png, not {suffix or 'no extension'}")


def _positive(value: Any, what: str, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{where}: {what} must be a positive number of mm, not {v}")
    return v


def _safe_stem(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "mip"


# --- the public L3 dataset --------------------------------------------------------------------------------


def _annotator_rows(ydata: Any, n: int, where: str) -> dict[str, np.ndarray]:
    y = ydata.item() if isinstance(ydata, np.ndarray) and ydata.ndim == 0 else ydata
    if not isinstance(y, dict) or not y:
        raise InputError(f"{where}: ydata must be a 0-d object array holding a dict annotator -> L3 rows")
    out = {}
    for k, v in y.items():
        try:
            a = np.asarray(v, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"{where}: ydata[{k!r}] is not an array of rows") from None
        if a.size != n:
            raise InputError(f"{where}: ydata[{k!r}] has {a.size} rows for {n} scans")
        out[str(k)] = a
    return out


def read_l3_npz(path: str | Path, level: str = "L3", patient_regex: str | None = None) -> list[MipScan]:
    """The scans of an ``l3_dataset.npz`` (see the module docstring); orientation not decided yet.

    ``patient_regex``: the patient is the first group of its match in the scan's name (default: the name)."""
    path = Path(path)
    if level.upper() != "L3":
        raise UsageError(f"{path}: the L3 dataset labels L3 only, not {level}")
    try:
        data = np.load(path, allow_pickle=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the npz ({exc})") from exc
    with data:
        missing = [k for k in ("images_f", "spacings", "names", "ydata") if k not in data.files]
        if missing:
            raise InputError(
                f"{path}: not the L3 dataset layout: no {', '.join(missing)} (has {', '.join(data.files)})"
            )
        try:
            images, spacings, names, ydata = (data[k] for k in ("images_f", "spacings", "names", "ydata"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the npz arrays ({exc})") from exc
    n = len(images)
    if not (len(spacings) == len(names) == n) or n == 0:
        raise InputError(
            f"{path}: {n} images, {len(spacings)} spacings and {len(names)} names: they must match (> 0)"
        )
    annotators = _annotator_rows(ydata, n, str(path))
    pattern = re.compile(patient_regex) if patient_regex else None
    stem = _safe_stem(path.stem)
    scans = []
    for i in range(n):
        where = f"{path}#{i}"
        sp = np.asarray(spacings[i], dtype=np.float64).reshape(-1)
        if sp.size < 3:
            raise InputError(f"{where}: spacings need 3 values (index 0 columns, 2 slices), got {sp.size}")
        name = names[i].decode() if isinstance(names[i], bytes) else str(names[i])
        patient = name
        if pattern is not None:
            m = pattern.search(name)
            if m is None:
                raise UsageError(f"--patient-regex does not match the name of scan {i}")
            patient = m.group(1) if m.groups() else m.group(0)
        per = {k: (float(v[i]) if math.isfinite(v[i]) else None) for k, v in annotators.items()}
        given = [v for v in per.values() if v is not None]
        scans.append(
            MipScan(
                scan_id=f"{stem}-{i:05d}",
                source=NPZ_SOURCE,
                origin=str(path),
                path=where,
                mm_per_row=_positive(sp[2], "slice spacing (spacings[2])", where),
                mm_per_col=_positive(sp[0], "column spacing (spacings[0])", where),
                level="L3",
                rows={"L3": float(np.mean(given)) if given else None},
                image=np.asarray(images[i]),
                name=name,
                patient=patient,
                annotator_rows=per,
            )
        )
    return scans


# --- manifests --------------------------------------------------------------------------------------------


def is_manifest(csv_path: str | Path) -> bool:
    """A CSV whose header has an ``image`` column (a scan list has ``path``)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise InputError(f"cannot read {csv_path}: {exc.strerror}") from exc
    return "image" in [h.strip() for h in header]


def _row_value(cell: str | None, where: str, what: str) -> float | None:
    cell = (cell or "").strip()
    if not cell:
        return None
    try:
        v = float(cell)
    except ValueError:
        raise InputError(f"{where}: {what} {cell!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{where}: {what} must be finite (leave it empty for 'not in the scan')")
    return v


def read_manifest(
    csv_path: str | Path, level: str = "L3", png_hu_offset: float | None = None
) -> list[MipScan]:
    """The MIPs listed in a manifest CSV (see the module docstring), head first unless told otherwise."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [{(k or "").strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    except OSError as exc:
        raise InputError(f"cannot read manifest {csv_path}: {exc.strerror}") from exc
    header = list(rows[0]) if rows else []
    if not rows:
        raise InputError(f"manifest {csv_path} has no rows")
    need = [c for c in ("image", "mm_per_row", "mm_per_col") if c not in header]
    if need:
        raise InputError(f"manifest {csv_path} needs the column(s) {', '.join(need)} (found {header})")
    per_level = {m.group(1).upper(): c for c in header if (m := _LEVEL_COLUMN.match(c))}
    if per_level and ("row" in header or "level" in header):
        raise InputError(f"manifest {csv_path}: give either row (+ level) or <LEVEL>_row columns, not both")
    if not per_level and "row" not in header:
        raise InputError(f"manifest {csv_path} needs a label column: row (+ level) or L3_row, L1_row, ...")
    level = level.upper()
    if per_level and level not in per_level:
        raise UsageError(
            f"manifest {csv_path} has no {level}_row column (has {', '.join(sorted(per_level))}); "
            f"pass --level with one of them"
        )
    scans, seen = [], set()
    for n, row in enumerate(rows, start=2):
        where = f"{csv_path} line {n}"
        image_s = (row.get("image") or "").strip()
        if not image_s:
            raise InputError(f"{where}: empty image")
        image = Path(image_s) if Path(image_s).is_absolute() else csv_path.parent / image_s
        if per_level:
            labels = {lv: _row_value(row.get(c), where, c) for lv, c in per_level.items()}
            primary = level
        else:
            primary = ((row.get("level") or "").strip() or level).upper()
            labels = {primary: _row_value(row.get("row"), where, "row")}
        for lv, v in labels.items():
            if v is not None and v < -0.5:
                raise InputError(f"{where}: {lv} row {v:g} is negative (rows are 0-based)")
        offset = _row_value(row.get("hu_offset"), where, "hu_offset")
        if offset is None:
            offset = png_hu_offset
        if image.suffix.lower() == ".png" and offset is None:
            raise InputError(f"{where}: a PNG needs its HU offset: a hu_offset column or --png-hu-offset")
        key = (str(image.resolve()), primary)
        if key in seen:
            raise InputError(f"{where}: {image.name} is listed twice for {primary}")
        seen.add(key)
        h = hashlib.sha1("|".join(key).encode()).hexdigest()[:10]
        patient = (row.get("patient") or "").strip() or None
        scans.append(
            MipScan(
                scan_id=f"{_safe_stem(image.stem)}-{h}",
                source=MANIFEST_SOURCE,
                origin=str(csv_path),
                path=str(image),
                mm_per_row=_positive(row.get("mm_per_row"), "mm_per_row", where),
                mm_per_col=_positive(row.get("mm_per_col"), "mm_per_col", where),
                level=primary,
                rows=labels,
                hu_offset=float(offset or 0.0),
                patient=patient,
            )
        )
    return scans


# --- caching ----------------------------------------------------------------------------------------------


def cache_mip(scan: MipScan, folder: Path, space: ModelSpace, dtype: str) -> dict[str, Any]:
    """Cache one MIP in model space (the cache job for MIP sources); returns its metadata."""
    mip = scan.load()
    n = mip.shape[0]
    labels: dict[str, float | None] = {}
    for lv, r in scan.rows.items():
        if r is not None and not -0.5 <= r <= n - 0.5:
            raise InputError(f"{scan.path}: the {lv} row {r:g} is outside the MIP's {n} rows")
        labels[lv] = None if r is None else -scan.mm_per_row * scan.superior_row(r, n)
    proj = scan.projection(mip)
    image, grid = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, space)
    z = labels.get(scan.level)
    label_z = math.nan if z is None else z
    extra = {
        "name": scan.name,
        "patient": scan.patient or scan.scan_id,
        "mm_per_row": scan.mm_per_row,
        "mm_per_col": scan.mm_per_col,
        "label_rows_stored": scan.rows,
        "annotator_rows": scan.annotator_rows,
        "orientation": scan.orientation,
        "orientation_by": scan.orientation_by,
        "orientation_scores": scan.orientation_scores,
    }
    meta = make_meta(
        scan.scan_id,
        scan.source,
        scan.path,
        scan.level,
        grid,
        proj.z_mm,
        label_z,
        z is not None,
        None,
        labels=labels,
        extra=extra,
    )
    save_cached(folder, meta, image, proj.z_mm, dtype)
    return meta


def mip_jobs(
    scans: list[MipScan], folder: Path, space: ModelSpace, dtype: str
) -> list[tuple[str, Any, tuple[Any, ...]]]:
    ids = [s.scan_id for s in scans]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"two MIPs would get the cache id {dup}: list each image once")
    return [(s.scan_id, cache_mip, (s, folder, space, dtype)) for s in scans]
