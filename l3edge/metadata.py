"""The model metadata contract: one JSON string in the IR's rt_info, written by tools/export.py only.

The runtime needs nothing but the IR: model space (mm per pixel, intensity windows, normalisation, window
size), the output layout, the inference mode, the default stride and the presence threshold all travel with
the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from l3edge.errors import ModelError

SCHEMA_VERSION = 1
RT_INFO_KEY = "l3edge_metadata"
"""Key of the metadata JSON string in the IR's rt_info (``model.get_rt_info(RT_INFO_KEY)``)."""


@dataclass(frozen=True)
class ModelSpace:
    """How a frontal MIP in HU becomes the model's input. Shared by the runtime and the training tools."""

    mm_per_px: float
    """Isotropic pixel size of model space, rows (superior -> inferior) and columns alike."""
    window_height_px: int
    """Nominal window height; the regression target is the L3 row minus the window's top row."""
    window_width_px: int
    """Model-space width: the MIP is resampled to this many columns centred on the image centre."""
    intensity_windows: tuple[tuple[float, float], ...]
    """One (low, high) HU window per input channel: clip, then map linearly to [0, 1]."""
    mean: tuple[float, ...]
    """Per-channel mean subtracted after the [0, 1] mapping."""
    std: tuple[float, ...]
    """Per-channel std divided after subtracting the mean."""
    fill_hu: float = -1024.0
    """HU used outside the scan (padding above/below and beyond the field of view)."""
    pad_px: int = 0
    """Rows of fill added above and below the MIP so L3 near a scan edge still has windows around it."""

    @property
    def channels(self) -> int:
        return len(self.intensity_windows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists instead of tuples)."""
        d = asdict(self)
        d["intensity_windows"] = [list(w) for w in self.intensity_windows]
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpace:
        """Inverse of :meth:`to_dict`; raises KeyError, TypeError or ValueError on malformed input."""
        return cls(
            mm_per_px=float(d["mm_per_px"]),
            window_height_px=int(d["window_height_px"]),
            window_width_px=int(d["window_width_px"]),
            intensity_windows=tuple((float(lo), float(hi)) for lo, hi in d["intensity_windows"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            fill_hu=float(d.get("fill_hu", -1024.0)),
            pad_px=int(d.get("pad_px", 0)),
        )

    @property
    def window_height_mm(self) -> float:
        return self.window_height_px * self.mm_per_px

    @property
    def window_width_mm(self) -> float:
        return self.window_width_px * self.mm_per_px


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to use a model, stored in the IR as JSON."""

    name: str
    """Model name, e.g. ``l3edge-vgg16-p85-int8``."""
    version: str
    """Model version string."""
    space: ModelSpace
    """Model space (preprocessing)."""
    input_name: str = "mip"
    """Name of the model input, NCHW float32, N and H dynamic."""
    offset_index: int = 0
    """Channel of the output holding the L3 row offset from the window top, in model pixels."""
    presence_index: int = 1
    """Channel of the output holding the 'L3 in this window' logit."""
    output_stride_px: int | None = 16
    """Strip mode: the model is fully convolutional and, run on a strip of height H, returns one prediction
    per window top ``s * k`` (s = this stride), output shape [1, 2, K, 1]. None: per-window mode only (input
    exactly one
    window per batch item, output [N, 2, 1, 1] or [N, 2])."""
    default_stride_px: int = 4
    """Default distance between window tops, in model pixels."""
    presence_threshold: float = 0.5
    """Mean presence probability over the best ramp above which L3 is reported found."""
    level: str = "L3"
    """Vertebral level the model reports by default (a refiner: ``any``, it places whichever vertebral body
    is nearest the centre of its window)."""
    levels: tuple[str, ...] = ()
    """Multi-level model: the levels it places, superior first; output channel ``k`` is the row offset of
    ``levels[k]`` from the window top and channel ``len(levels) + k`` its presence logit. Empty: one level
    (``level``) at ``offset_index`` / ``presence_index``."""
    review_below: float = 0.0
    """A result whose confidence is below this is flagged for review (chosen on validation scans)."""
    precision: str = "fp32"
    """Weights precision of the IR (fp32, fp16, int8)."""
    architecture: str = ""
    """Architecture, e.g. ``vgg16`` or ``cnn4``, with pruning ratio where pruned."""
    trained_on: str = ""
    """Human-readable description of the training data."""
    parent_sha256: str = ""
    """SHA-256 of the checkpoint the IR was exported from."""
    refiner: str = ""
    """File name of a refinement IR next to this model (see ``l3edge.refine``); empty: no refinement."""
    refine_band: tuple[float, float] | None = None
    """Set on a refiner only: the offsets it regresses, in window heights (L3 near the window centre)."""
    refine_shifts_px: tuple[int, ...] = ()
    """Set on a refiner only: its window centres relative to the coarse estimate, in its model pixels."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (training metrics, pruning, calibration)."""

    @property
    def is_refiner(self) -> bool:
        return self.refine_band is not None

    @property
    def model_levels(self) -> tuple[str, ...]:
        """The levels the model places (``levels``, or just ``level``)."""
        return self.levels or (self.level,)

    def channels_of(self, level: str) -> tuple[int, int]:
        """(offset channel, presence channel) of ``level`` in the model's output."""
        if not self.levels:
            if level != self.level:
                raise KeyError(level)
            return self.offset_index, self.presence_index
        k = self.levels.index(level)
        return k, len(self.levels) + k

    def to_json(self) -> str:
        d = asdict(self)
        d["schema_version"] = SCHEMA_VERSION
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"model metadata is not valid JSON ({exc}); re-export the model with tools/export.py"
            ) from exc
        if not isinstance(d, dict):
            raise ModelError("model metadata is not a JSON object; re-export the model with tools/export.py")
        version = d.pop("schema_version", None)
        if version != SCHEMA_VERSION:
            raise ModelError(
                f"model metadata schema version {version!r} is not supported "
                f"(this l3edge reads {SCHEMA_VERSION}); "
                "use a matching l3edge version or re-export the model"
            )
        try:
            space = ModelSpace.from_dict(d.pop("space"))
            if d.get("refine_band") is not None:
                d["refine_band"] = tuple(float(v) for v in d["refine_band"])
            d["refine_shifts_px"] = tuple(int(v) for v in d.get("refine_shifts_px") or ())
            d["levels"] = tuple(str(v) for v in d.get("levels") or ())
            meta = cls(space=space, **d)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"model metadata is incomplete or malformed ({exc!r}); re-export the model"
            ) from exc
        meta.validate()
        return meta

    def validate(self) -> None:
        s = self.space
        problems = []
        if not s.mm_per_px > 0:
            problems.append("mm_per_px must be > 0")
        if s.window_height_px <= 0 or s.window_width_px <= 0:
            problems.append("window size must be positive")
        if not (len(s.intensity_windows) == len(s.mean) == len(s.std) >= 1):
            problems.append("intensity_windows, mean and std need one entry per channel")
        if any(hi <= lo for lo, hi in s.intensity_windows):
            problems.append("each intensity window needs high > low")
        if any(v <= 0 for v in s.std):
            problems.append("std must be > 0")
        if self.default_stride_px <= 0:
            problems.append("default_stride_px must be > 0")
        if self.output_stride_px is not None and self.output_stride_px <= 0:
            problems.append("output_stride_px must be > 0 or null")
        if self.levels and (self.level not in self.levels or len(set(self.levels)) != len(self.levels)):
            problems.append("levels must be distinct and include the default level")
        if self.refine_band is not None:
            band = self.refine_band
            if not (len(band) == 2 and 0 <= band[0] < band[1] <= 1 and self.refine_shifts_px):
                problems.append("a refiner needs 0 <= refine_band low < high <= 1 and refine_shifts_px")
            if self.refiner:
                problems.append("a refiner cannot have a refiner of its own")
        if problems:
            raise ModelError("model metadata is invalid: " + "; ".join(problems))
