"""What to do with each scan: :class:`PredictOptions`, built once where a request comes in (the API's keyword
arguments, ``batch.run``'s ``options``, the CLI's flags) and passed down unchanged to the per-scan job, the
study step and the answer.

A new per-scan option is a field here (with its check in ``__post_init__``) and a flag in
``l3edge.cli.predict``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from l3edge.errors import UsageError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PredictOptions:
    """How one scan is answered. Frozen and picklable: it travels to worker processes and Dask tasks."""

    series_uid: str | None = None
    """Consider only this DICOM SeriesInstanceUID (None: every candidate series, the best one by content)."""
    all_series: bool = False
    """One result per candidate series (``--series all``) instead of the best one."""
    stride: int | None = None
    """Window stride in model pixels (None: the locator's)."""
    qa_dir: PathLike | None = None
    """Write a QA picture (PNG) per scan into this folder."""
    qa_axial: int = 0
    """With ``qa_dir``: also axial thumbnails at every level found and this many steps each side, for the
    review page's axial view (``l3edge.qa_axial``; 0: none, the default)."""
    level: str | None = None
    """The vertebral level the result's fields describe (None: the model's, L3); upper-cased here."""
    threads: int | None = None
    """Decoding threads (None: the locator's ``threads``, else every CPU)."""
    export_dir: PathLike | None = None
    """Copy the chosen slice (and a PNG of it) into ``export_dir/<scan name>/`` (``l3edge.export``)."""
    export_neighbours: int = 0
    """With ``export_dir``: also this many slices on each side."""

    def __post_init__(self) -> None:
        if self.export_neighbours < 0:
            raise UsageError(f"export_neighbours must be >= 0, not {self.export_neighbours}")
        if self.qa_axial < 0:
            raise UsageError(f"qa_axial must be >= 0, not {self.qa_axial}")
        if self.qa_axial and self.qa_dir is None:
            raise UsageError("qa_axial adds thumbnails to the QA pictures: give qa_dir (--qa DIR) too")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be >= 1, not {self.threads}")
        if self.all_series and self.series_uid is not None:
            raise UsageError("choose either one series (series_uid) or all of them (all_series), not both")
        if self.level is not None:
            object.__setattr__(self, "level", str(self.level).upper())

    @classmethod
    def of(cls, options: PredictOptions | Mapping[str, Any] | None = None, **changes: Any) -> PredictOptions:
        """Options from a PredictOptions, or from a mapping of its field names (``batch.run``'s ``options``),
        with ``changes`` on top.

        ``series_uid="all"`` in a mapping is read as ``all_series=True`` (what ``--series all`` used to pass;
        a SeriesInstanceUID is digits and dots, so it can never be "all").

        Raises:
            UsageError: an unknown name, or inconsistent values.
        """
        if isinstance(options, PredictOptions):
            given: dict[str, Any] = {}
            base = options
        else:
            given, base = dict(options or {}), cls()
        given.update(changes)
        if given.get("series_uid") == "all":
            given["series_uid"], given["all_series"] = None, True
        unknown = sorted(set(given) - {f.name for f in fields(cls)})
        if unknown:
            raise UsageError(f"unknown predict option(s): {', '.join(unknown)}")
        return replace(base, **given) if given else base

    def kwargs(self) -> dict[str, Any]:
        """The options that differ from the defaults, as keyword arguments of ``L3Locator.predict`` (what a
        custom per-scan function of ``batch.run`` receives; ``all_series`` is not one of them)."""
        default = PredictOptions()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "all_series" and getattr(self, f.name) != getattr(default, f.name)
        }
