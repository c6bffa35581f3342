"""The public API: a reusable L3 locator and a one-shot ``locate``.

Pipeline per scan: read the frontal MIP (l3edge.scan) -> model space (preprocess) -> windows through the
model, as is and mirrored (sliding, runtime) -> per-level ramp correlation and the ladder (postprocess,
ladder) -> refinement (refine) -> patient z -> nearest slice, confidence and review (place).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from l3edge.errors import ModelError, UsageError
from l3edge.metadata import ModelMetadata
from l3edge.place import PlacedLevel, place_levels
from l3edge.preprocess import normalize, to_model_space
from l3edge.refine import refine_rows
from l3edge.result import L3Result
from l3edge.runtime import CacheDir, ModelLocation, OVModel, resolve_model
from l3edge.series import Projection

if TYPE_CHECKING:
    from l3edge.scan import Scan

log = logging.getLogger(__name__)

Mode = Literal["auto", "strip", "window"]
MODES: tuple[str, ...] = ("auto", "strip", "window")
MEMORY_PATH = "<memory>"


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


class L3Locator:
    """Finds the L3 slice in CT scans with one loaded model. Load once, call :meth:`predict` many times.

    Thread-safe: threads may share one locator (its model runs take turns; see ``OVModel``).
    """

    def __init__(
        self,
        model: OVModel,
        stride: int | None = None,
        mode: Mode | str = "auto",
        location: ModelLocation | None = None,
        refiner: OVModel | None = None,
        mirror: bool = True,
        threads: int | None = None,
    ) -> None:
        self.model = model
        """The compiled model."""
        self.mirror = mirror
        """Also run every scan mirrored left-right: the answer averages both, and their disagreement lowers
        the confidence."""
        if refiner is not None and not refiner.metadata.is_refiner:
            raise ModelError(f"{refiner.path} is not a refiner (its metadata has no refine_band)")
        self.refiner = refiner
        """The compiled refinement model (``l3edge.refine``), or None."""
        self.location = location or ModelLocation(model.path, "argument")
        """Where the model was found."""
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "strip" and model.metadata.output_stride_px is None:
            raise UsageError(
                "mode 'strip' needs a fully convolutional model (its metadata has no output stride)"
            )
        self.mode = str(mode)
        """``auto`` (strip when the model and stride allow it, else per window), ``strip`` or ``window``."""
        self.stride = self._check_stride(stride)
        """Distance between window tops in model pixels."""
        self.threads = threads
        """CPU threads asked for at load (inference); :meth:`predict` decodes with as many (None: all)."""

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str] | None = None,
        device: str = "CPU",
        threads: int | None = None,
        stride: int | None = None,
        mode: Mode | str = "auto",
        inference_precision: str | None = None,
        refine: bool = True,
        mirror: bool = True,
        cache_dir: CacheDir = None,
    ) -> L3Locator:
        """Find, check and compile the model (explicit path, then ``$L3EDGE_MODEL``, then the bundled model),
        and its refiner when its metadata names one and ``refine`` is true. Compiled models are cached in
        ``cache_dir`` (default ``$L3EDGE_CACHE_DIR``, else the user's cache folder; False: no cache).

        Raises:
            ModelError: no usable model, or a missing or unusable refiner.
            UsageError: inconsistent stride or mode.
        """
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        location = resolve_model(model)
        kw: dict[str, Any] = dict(
            device=device, threads=threads, inference_precision=inference_precision, cache_dir=cache_dir
        )
        ov_model = OVModel.load(location.path, **kw)
        refiner = None
        name = ov_model.metadata.refiner
        if refine and name:
            try:
                refiner = OVModel.load(location.path.parent / name, **kw)
            except ModelError as exc:
                raise ModelError(
                    f"{exc} (the model's refiner; --no-refine, API refine=False, runs without it)"
                ) from exc
            if refiner.metadata.level not in ("any", ov_model.metadata.level):
                levels = f"{refiner.metadata.level}, the model finds {ov_model.metadata.level}"
                raise ModelError(f"{refiner.path} refines {levels}")
        return cls(
            ov_model,
            stride=stride,
            mode=mode,
            location=location,
            refiner=refiner,
            mirror=mirror,
            threads=threads,
        )

    @property
    def metadata(self) -> ModelMetadata:
        return self.model.metadata

    def _check_stride(self, stride: int | None) -> int:
        s = self.metadata.default_stride_px if stride is None else int(stride)
        if s < 1:
            raise UsageError(f"stride must be >= 1 model pixel, not {s}")
        out = self.metadata.output_stride_px
        if self.mode == "strip" and out is not None and out % s and s % out:
            raise UsageError(f"stride {s} must divide the model's output stride {out} or be a multiple of it")
        return s

    def _strip_mode(self, stride: int) -> bool:
        out = self.metadata.output_stride_px
        if self.mode == "window" or out is None:
            return False
        return not (out % stride and stride % out)

    def predict(
        self,
        path: str | os.PathLike[str] | Scan,
        series_uid: str | None = None,
        stride: int | None = None,
        qa_dir: str | os.PathLike[str] | None = None,
        level: str | None = None,
        *,
        threads: int | None = None,
        export_dir: str | os.PathLike[str] | None = None,
        export_neighbours: int = 0,
    ) -> L3Result:
        """Locate L3 (or ``level``) in the scan at ``path`` (DICOM folder, zip archive of one, or NIfTI file).

        When a DICOM study holds several axial CT series, each candidate is read once, in a documented
        preference order, and the one where the level is found best is reported (``l3edge.dicom_choice``);
        ``series_choice`` says why and ``warnings`` lists the others.

        Args:
            path: the scan, or a ``Scan`` from ``l3edge.scan.open_scan`` (closed when done).
            series_uid: consider only this DICOM SeriesInstanceUID.
            stride: window stride in model pixels (default: the locator's).
            qa_dir: write a QA picture (PNG) for this scan into this folder.
            level: the vertebral level the result's fields describe (default: the model's, L3); every
                level in view is in ``result.levels`` either way.
            threads: decoding threads (default: the ``threads`` the locator was loaded with, else every CPU).
            export_dir: copy the chosen slice (DICOM file byte for byte, or a 2D NIfTI) and a PNG of it into
                ``export_dir/<scan name>/`` (``l3edge.export``); sets ``export_path``.
            export_neighbours: also export this many slices on each side.

        Raises:
            InputError: the scan cannot be read or used.
            UsageError: inconsistent stride or export options, or a level the model does not place.
        """
        from l3edge import study

        self.check_level(level)
        scan, where = self._open(path, series_uid, threads, export_neighbours)
        with scan:
            return study.predict_scan(self, scan, where, stride, qa_dir, export_dir, export_neighbours, level)

    def predict_all(
        self,
        path: str | os.PathLike[str] | Scan,
        stride: int | None = None,
        qa_dir: str | os.PathLike[str] | None = None,
        level: str | None = None,
        *,
        threads: int | None = None,
        export_dir: str | os.PathLike[str] | None = None,
        export_neighbours: int = 0,
    ) -> list[L3Result]:
        """One result per candidate series of the scan (``--series all``), most preferred first; a candidate
        that cannot be read gets a result with its ``error``. Arguments as for :meth:`predict`; QA pictures
        and exports of a multi-series scan go into one subfolder per series.

        Raises:
            InputError: the scan has no candidate series at all.
        """
        from l3edge import study

        self.check_level(level)
        scan, where = self._open(path, None, threads, export_neighbours)
        with scan:
            return study.predict_each(self, scan, where, stride, qa_dir, export_dir, export_neighbours, level)

    def _open(
        self,
        path: str | os.PathLike[str] | Scan,
        series_uid: str | None,
        threads: int | None,
        neighbours: int,
    ) -> tuple[Scan, str]:
        # Imported here so that `import l3edge` stays light and the API works on in-memory projections alone.
        from l3edge.scan import Scan, open_scan

        if neighbours < 0:
            raise UsageError(f"export_neighbours must be >= 0, not {neighbours}")
        if isinstance(path, Scan):
            return path, str(path.path)
        return open_scan(Path(path), series_uid, threads if threads is not None else self.threads), str(path)

    def predict_projection(
        self,
        projection: Projection,
        stride: int | None = None,
        qa_dir: str | os.PathLike[str] | None = None,
        path: str | None = None,
        level: str | None = None,
    ) -> L3Result:
        """Locate L3 (or ``level``) in an already computed frontal MIP (e.g. a phantom's)."""
        where = path or (str(projection.series.path) if projection.series is not None else MEMORY_PATH)
        read_ms = round(float(sum(projection.timings_ms.values())), 3)
        return self._locate(projection, where, read_ms, stride, qa_dir, level)

    def _locate(
        self,
        projection: Projection,
        path: str,
        read_ms: float,
        stride: int | None,
        qa_dir: str | os.PathLike[str] | None,
        level: str | None = None,
    ) -> L3Result:
        meta = self.metadata
        space = meta.space
        level = self.check_level(level)
        s = self.stride if stride is None else self._check_stride(stride)
        timings: dict[str, float] = {"read_mip": read_ms}

        t = time.perf_counter()
        image, grid = to_model_space(projection.mip_hu, projection.z_mm, projection.col_spacing_mm, space)
        channels = normalize(image, space)
        timings["preprocess"] = _ms(t)

        output_stride = meta.output_stride_px if self._strip_mode(s) else None
        placed = place_levels(
            self.model.run,
            channels,
            grid,
            meta,
            s,
            output_stride,
            projection.z_mm,
            (lambda z: self._refine(projection, z)) if self.refiner is not None else None,
            mirror=self.mirror,
        )
        timings.update(placed.timings_ms)

        t = time.perf_counter()
        series = projection.series
        warnings = list(series.warnings) if series is not None else []
        warnings += placed.warnings(level)
        lv = placed.levels[level]
        levels = {m: self._slice_fields(projection, p) for m, p in placed.levels.items() if p.found}
        for m, p in placed.levels.items():
            if p.found:
                levels[m]["confidence"] = round(p.confidence, 4)
        fields = self._slice_fields(projection, lv) if lv.found else {}
        fields.pop("confidence", None)
        result = L3Result(
            path=path,
            found=lv.found,
            z_mm=fields.get("z_mm"),
            slice_index=fields.get("slice_index"),
            slice_z_mm=fields.get("slice_z_mm"),
            instance_number=fields.get("instance_number"),
            sop_instance_uid=fields.get("sop_instance_uid"),
            series_instance_uid=series.series_instance_uid if series is not None else None,
            n_slices=projection.n_slices,
            confidence=round(lv.confidence, 4),
            presence=round(lv.presence, 4),
            ramp_r=round(lv.ramp_r, 4),
            timings_ms=timings,
            model={"name": meta.name, "version": meta.version},
            warnings=tuple(warnings),
            level=level,
            levels=levels if len(meta.model_levels) > 1 else {},
            review=placed.review(level, meta.review_below),
        )
        timings["postprocess"] = round(timings["postprocess"] + _ms(t), 3)
        if qa_dir is not None:
            result = self._write_qa(projection, result, lv.row, Path(qa_dir))
        timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)
        log.info(
            "%s: %s found=%s z=%s slice=%s review=%s (%.0f ms)",
            path,
            level,
            result.found,
            result.z_mm,
            result.slice_index,
            result.review,
            timings["total"],
        )
        return result

    def check_level(self, level: str | None) -> str:
        """The level a result will describe: ``level`` in upper case, or the model's default.

        Raises:
            UsageError: the model does not place ``level``.
        """
        if level is None:
            return self.metadata.level
        name = str(level).upper()
        if name not in self.metadata.model_levels:
            known = ", ".join(self.metadata.model_levels)
            raise UsageError(f"this model places {known}, not {level!r}")
        return name

    @staticmethod
    def _slice_fields(projection: Projection, p: PlacedLevel) -> dict[str, Any]:
        """z and slice identifiers of a placed level (``p.row`` is a superior-first row of the projection)."""
        assert p.row is not None and p.z_mm is not None
        row = p.row
        series = projection.series
        d: dict[str, Any] = {
            "z_mm": round(p.z_mm, 3),
            "slice_z_mm": round(float(projection.z_mm[row]), 3),
            "slice_index": None,
            "instance_number": None,
            "sop_instance_uid": None,
        }
        if series is not None and len(series.slice_index) == projection.n_slices:
            d["slice_index"] = int(series.slice_index[row])
            d["instance_number"] = _at(series.instance_numbers, row)
            d["sop_instance_uid"] = _at(series.sop_instance_uids, row)
        else:
            # An in-memory projection without a series: rows are superior -> inferior, so the
            # z-ascending index of row i is counted from the last row.
            d["slice_index"] = projection.n_slices - 1 - row
        return d

    def _refine(self, projection: Projection, z_mm: list[float]) -> list[float]:
        """The refiner's z for each coarse estimate in ``z_mm`` (unchanged where its windows do not agree)."""
        assert self.refiner is not None
        rmeta = self.refiner.metadata
        space = rmeta.space
        h = space.window_height_px
        # Only the rows the refiner's windows can reach go to its (finer) model space.
        reach = (h / 2 + max(abs(s) for s in rmeta.refine_shifts_px) + 2) * space.mm_per_px
        z = np.asarray(projection.z_mm)
        reach += float(np.median(np.abs(np.diff(z)))) if z.size > 1 else 0.0  # one slice more each side
        keep = np.flatnonzero((z >= min(z_mm) - reach) & (z <= max(z_mm) + reach))
        if keep.size == 0:
            return list(z_mm)
        rows = slice(int(keep[0]), int(keep[-1]) + 1)
        image, grid = to_model_space(projection.mip_hu[rows], z[rows], projection.col_spacing_mm, space)
        assert rmeta.refine_band is not None
        out = refine_rows(
            self.refiner.run,
            normalize(image, space),
            [float(np.asarray(grid.z_to_row(v))) for v in z_mm],
            h,
            rmeta.refine_band,
            np.asarray(rmeta.refine_shifts_px),
        )
        return [
            v if o is None else float(np.asarray(grid.row_to_z(o[0]))) for v, o in zip(z_mm, out, strict=True)
        ]

    def _write_qa(
        self, projection: Projection, result: L3Result, row_i: int | None, qa_dir: Path
    ) -> L3Result:
        from dataclasses import replace

        from l3edge import qa

        t = time.perf_counter()
        axial = None
        warnings = list(result.warnings)
        if row_i is not None and projection.series is not None and projection.series.source != "phantom":
            from l3edge.errors import InputError
            from l3edge.scan import read_axial_slice

            try:
                axial = read_axial_slice(projection.series, row_i)
            except InputError as exc:
                warnings.append(f"QA picture without the axial slice: {exc}")
        out = qa.write_qa(qa_dir, result.path, projection, result, axial)
        result.timings_ms["qa"] = _ms(t)
        return replace(result, qa_path=str(out), warnings=tuple(warnings))


def _at(values: tuple[Any, ...], i: int) -> Any:
    return values[i] if i < len(values) else None


def locate(path: str | os.PathLike[str], model: str | os.PathLike[str] | None = None, **kw: Any) -> L3Result:
    """One-shot: load the model and locate L3 in one scan.

    Keyword arguments go to :meth:`L3Locator.load` (device, threads, stride, mode, inference_precision,
    refine, mirror) or to :meth:`L3Locator.predict` (series_uid, qa_dir, level, export_dir,
    export_neighbours).
    """
    load_keys = {"device", "threads", "stride", "mode", "inference_precision", "refine", "mirror"}
    load_kw = {k: v for k, v in kw.items() if k in load_keys}
    predict_kw = {k: v for k, v in kw.items() if k not in load_keys}
    unknown = set(predict_kw) - {"series_uid", "qa_dir", "level", "export_dir", "export_neighbours"}
    if unknown:
        raise UsageError(f"unknown argument(s) to locate: {', '.join(sorted(unknown))}")
    return L3Locator.load(model, **load_kw).predict(path, **predict_kw)
