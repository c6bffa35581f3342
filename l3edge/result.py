"""What l3edge reports for one scan."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LevelResult:
    """One vertebral level placed inside a scan (an entry of ``L3Result.levels``). No patient data."""

    z_mm: float
    """Patient z (mm) of the level's centre, as ``L3Result.z_mm``."""
    slice_z_mm: float
    """Patient z of the slice nearest to ``z_mm``."""
    slice_index: int | None
    """That slice, as ``L3Result.slice_index``."""
    instance_number: int | None
    """Its DICOM InstanceNumber (None when absent, or NIfTI)."""
    sop_instance_uid: str | None
    """Its DICOM SOPInstanceUID (None for NIfTI)."""
    confidence: float
    """The level's confidence, in [0, 1]."""

    def __getitem__(self, name: str) -> Any:
        """``level["z_mm"]``: the field by name, for code written when levels were dicts."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True)
class L3Result:
    """The L3 slice of one scan (or why there is none). No patient data."""

    path: str
    """The input path as given (DICOM folder or NIfTI file; ``<memory>`` for an in-memory projection)."""
    found: bool
    """L3 was found inside the scan."""
    z_mm: float | None
    """Patient z (superior axis, mm; DICOM LPS, NIfTI converted to the same z) of the predicted L3 level.
    None when not found."""
    slice_index: int | None
    """The chosen slice (nearest to ``z_mm``): for DICOM its 0-based index in z-ascending (feet -> head)
    order; for NIfTI its index along the file's third axis. None when not found."""
    slice_z_mm: float | None
    """Patient z of the chosen slice (None when not found)."""
    instance_number: int | None
    """DICOM InstanceNumber of the chosen slice (None when not found, absent, or NIfTI)."""
    sop_instance_uid: str | None
    """DICOM SOPInstanceUID of the chosen slice (None when not found or NIfTI)."""
    series_instance_uid: str | None
    """DICOM SeriesInstanceUID of the series read (None for NIfTI or on error)."""
    n_slices: int | None
    """Number of slices in the series read (None on error)."""
    confidence: float
    """Mean presence probability of the best ramp times its correlation, in [0, 1]."""
    presence: float
    """Mean presence probability over the best ramp, in [0, 1]."""
    ramp_r: float
    """Correlation of the best run's offsets with the ideal ramp (1 is perfect)."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Milliseconds per stage: ``read_mip``, ``preprocess``, ``cnn``, ``postprocess``, ``total``."""
    model: dict[str, str] = field(default_factory=dict)
    """The model used: ``{"name": ..., "version": ...}`` (empty when the scan failed before the model ran)."""
    warnings: tuple[str, ...] = ()
    """Non-fatal problems (reader warnings, L3 placed outside the scan, ...)."""
    error: str | None = None
    """None on success; otherwise why the scan could not be processed (then ``found`` is False)."""
    qa_path: str | None = None
    """The QA picture written for this scan, if any."""
    level: str = "L3"
    """The vertebral level that ``found``, ``z_mm``, the slice fields and ``confidence`` describe."""
    levels: Mapping[str, LevelResult] = field(default_factory=dict)
    """Every level placed inside the scan, superior first -> its :class:`LevelResult` (empty when the model
    places only one level or the scan failed); in ``to_dict`` a dict of dicts."""
    review: bool = False
    """A person should check this result: low confidence, or the vertebral counts disagree (see warnings)."""
    series_choice: str | None = None
    """Why this series was read: the only candidate, forced with ``series_uid``, or chosen by content among
    several (the others are listed in ``warnings``). None for in-memory projections."""
    export_path: str | None = None
    """The exported file of the chosen slice (``export_dir``), if any."""

    @classmethod
    def failure(
        cls, path: str, error: str, model: dict[str, str] | None = None, level: str = "L3"
    ) -> L3Result:
        """A result for a scan that could not be processed."""
        return cls(
            path=str(path),
            found=False,
            z_mm=None,
            slice_index=None,
            slice_z_mm=None,
            instance_number=None,
            sop_instance_uid=None,
            series_instance_uid=None,
            n_slices=None,
            confidence=0.0,
            presence=0.0,
            ramp_r=0.0,
            model=dict(model or {}),
            error=error,
            level=level,
        )

    @property
    def ok(self) -> bool:
        """The scan was processed (L3 found or reported absent)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite floats become None, warnings a list)."""
        d = asdict(self)  # nested LevelResults become dicts, in field order
        d["warnings"] = list(self.warnings)
        d["levels"] = {m: asdict(lv) for m, lv in self.levels.items()}
        return {k: _finite(v) for k, v in d.items()}


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v
