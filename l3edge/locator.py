"""The public API: a reusable L3 locator and a one-shot ``locate``.

Pipeline per scan: read the frontal MIP (l3edge.scan) -> model space (preprocess) -> windows through the model
(sliding, runtime) -> ramp correlation (postprocess) -> model-space row to patient z -> nearest slice.
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
from l3edge.postprocess import fit_ramp, place_on_slices
from l3edge.preprocess import normalize, to_model_space
from l3edge.refine import refine_row
from l3edge.result import L3Result
from l3edge.runtime import ModelLocation, OVModel, resolve_model
from l3edge.series import Projection
from l3edge.sliding import predict

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

    Not thread-safe (one OpenVINO infer request): use one locator per thread.
    """

    def __init__(
        self,
        model: OVModel,
        stride: int | None = None,
        mode: Mode | str = "auto",
        location: ModelLocation | None = None,
        refiner: OVModel | None = None,
        threads: int | None = None,
    ) -> None:
        self.model = model
        """The compiled model."""
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
    ) -> L3Locator:
        """Find, check and compile the model (explicit path, then ``$L3EDGE_MODEL``, then the bundled model),
        and its refiner when its metadata names one and ``refine`` is true.

        Raises:
            ModelError: no usable model, or a missing or unusable refiner.
            UsageError: inconsistent stride or mode.
        """
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        location = resolve_model(model)
        kw: dict[str, Any] = dict(device=device, threads=threads, inference_precision=inference_precision)
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
            if refiner.metadata.level != ov_model.metadata.level:
                levels = f"{refiner.metadata.level}, the model finds {ov_model.metadata.level}"
                raise ModelError(f"{refiner.path} refines {levels}")
        return cls(ov_model, stride=stride, mode=mode, location=location, refiner=refiner, threads=threads)

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
        *,
        threads: int | None = None,
        export_dir: str | os.PathLike[str] | None = None,
        export_neighbours: int = 0,
    ) -> L3Result:
        """Locate L3 in the scan at ``path`` (DICOM folder, zip archive of one, or NIfTI file).

        When a DICOM study holds several axial CT series, each candidate is read once, in a documented
        preference order, and the one where L3 is found best is reported (``l3edge.dicom_choice``);
        ``series_choice`` says why and ``warnings`` lists the others.

        Args:
            path: the scan, or a ``Scan`` from ``l3edge.scan.open_scan`` (closed when done).
            series_uid: consider only this DICOM SeriesInstanceUID.
            stride: window stride in model pixels (default: the locator's).
            qa_dir: write a QA picture (PNG) for this scan into this folder.
            threads: decoding threads (default: the ``threads`` the locator was loaded with, else every CPU).
            export_dir: copy the chosen slice (DICOM file byte for byte, or a 2D NIfTI) and a PNG of it into
                ``export_dir/<scan name>/`` (``l3edge.export``); sets ``export_path``.
            export_neighbours: also export this many slices on each side.

        Raises:
            InputError: the scan cannot be read or used.
            UsageError: inconsistent stride or export options.
        """
        from l3edge import study

        scan, where = self._open(path, series_uid, threads, export_neighbours)
        with scan:
            return study.predict_scan(self, scan, where, stride, qa_dir, export_dir, export_neighbours)

    def predict_all(
        self,
        path: str | os.PathLike[str] | Scan,
        stride: int | None = None,
        qa_dir: str | os.PathLike[str] | None = None,
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

        scan, where = self._open(path, None, threads, export_neighbours)
        with scan:
            return study.predict_each(self, scan, where, stride, qa_dir, export_dir, export_neighbours)

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
    ) -> L3Result:
        """Locate L3 in an already computed frontal MIP (e.g. a phantom's)."""
        where = path or (str(projection.series.path) if projection.series is not None else MEMORY_PATH)
        read_ms = round(float(sum(projection.timings_ms.values())), 3)
        return self._locate(projection, where, read_ms, stride, qa_dir)

    def _locate(
        self,
        projection: Projection,
        path: str,
        read_ms: float,
        stride: int | None,
        qa_dir: str | os.PathLike[str] | None,
    ) -> L3Result:
        meta = self.metadata
        space = meta.space
        s = self.stride if stride is None else self._check_stride(stride)
        timings: dict[str, float] = {"read_mip": read_ms}

        t = time.perf_counter()
        image, grid = to_model_space(projection.mip_hu, projection.z_mm, projection.col_spacing_mm, space)
        channels = normalize(image, space)
        timings["preprocess"] = _ms(t)

        t = time.perf_counter()
        height = space.window_height_px
        output_stride = meta.output_stride_px if self._strip_mode(s) else None
        tops, preds = predict(self.model.run, channels, height, s, output_stride)
        timings["cnn"] = _ms(t)

        t = time.perf_counter()
        fit = fit_ramp(
            tops, preds[:, meta.offset_index], preds[:, meta.presence_index], height, meta.presence_threshold
        )
        z_fit = float(np.asarray(grid.row_to_z(fit.row)))
        timings["postprocess"] = _ms(t)
        if fit.found and self.refiner is not None:
            t = time.perf_counter()
            z_fit = self._refine(projection, z_fit)
            timings["refine"] = _ms(t)

        t = time.perf_counter()
        series = projection.series
        warnings = list(series.warnings) if series is not None else []
        fields: dict[str, Any] = dict(
            z_mm=None, slice_index=None, slice_z_mm=None, instance_number=None, sop_instance_uid=None
        )
        place = place_on_slices(fit, z_fit, projection.z_mm, space.mm_per_px / 2)
        found, row_i = place.found, place.row
        if place.outside:
            warnings.append(
                f"the model placed {meta.level} outside the scan (in the padding); reported not found"
            )
        if row_i is not None and place.z_mm is not None:
            fields["z_mm"] = round(place.z_mm, 3)
            fields["slice_z_mm"] = round(float(projection.z_mm[row_i]), 3)
            if series is not None and len(series.slice_index) == projection.n_slices:
                fields["slice_index"] = int(series.slice_index[row_i])
                fields["instance_number"] = _at(series.instance_numbers, row_i)
                fields["sop_instance_uid"] = _at(series.sop_instance_uids, row_i)
            else:
                # An in-memory projection without a series: rows are superior -> inferior, so the
                # z-ascending index of row i is counted from the last row.
                fields["slice_index"] = projection.n_slices - 1 - row_i
        timings["postprocess"] += _ms(t)

        result = L3Result(
            path=path,
            found=found,
            series_instance_uid=series.series_instance_uid if series is not None else None,
            n_slices=projection.n_slices,
            confidence=round(fit.confidence, 4),
            presence=round(fit.presence, 4),
            ramp_r=round(fit.ramp_r, 4),
            timings_ms=timings,
            model={"name": meta.name, "version": meta.version},
            warnings=tuple(warnings),
            **fields,
        )
        if qa_dir is not None:
            result = self._write_qa(projection, result, row_i, Path(qa_dir))
        timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)
        log.info(
            "%s: found=%s z=%s slice=%s (%.0f ms)",
            path,
            result.found,
            result.z_mm,
            result.slice_index,
            timings["total"],
        )
        return result

    def _refine(self, projection: Projection, z_mm: float) -> float:
        """The refiner's z for the coarse estimate ``z_mm`` (unchanged when its windows do not agree)."""
        assert self.refiner is not None
        rmeta = self.refiner.metadata
        space = rmeta.space
        h = space.window_height_px
        # Only the rows the refiner's windows can reach go to its (finer) model space.
        reach = (h / 2 + max(abs(s) for s in rmeta.refine_shifts_px) + 2) * space.mm_per_px
        z = np.asarray(projection.z_mm)
        reach += float(np.median(np.abs(np.diff(z)))) if z.size > 1 else 0.0  # one slice more each side
        keep = np.flatnonzero(np.abs(z - z_mm) <= reach)
        if keep.size == 0:
            return z_mm
        rows = slice(int(keep[0]), int(keep[-1]) + 1)
        image, grid = to_model_space(projection.mip_hu[rows], z[rows], projection.col_spacing_mm, space)
        assert rmeta.refine_band is not None
        out = refine_row(
            self.refiner.run,
            normalize(image, space),
            float(np.asarray(grid.z_to_row(z_mm))),
            h,
            rmeta.refine_band,
            np.asarray(rmeta.refine_shifts_px),
        )
        return z_mm if out is None else float(np.asarray(grid.row_to_z(out[0])))

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
        out = qa.write_qa(qa_dir, result.path, projection, result.z_mm, axial, level=self.metadata.level)
        result.timings_ms["qa"] = _ms(t)
        return replace(result, qa_path=str(out), warnings=tuple(warnings))


def _at(values: tuple[Any, ...], i: int) -> Any:
    return values[i] if i < len(values) else None


def locate(path: str | os.PathLike[str], model: str | os.PathLike[str] | None = None, **kw: Any) -> L3Result:
    """One-shot: load the model and locate L3 in one scan.

    Keyword arguments go to :meth:`L3Locator.load` (device, threads, stride, mode, inference_precision,
    refine) or to :meth:`L3Locator.predict` (series_uid, qa_dir, export_dir, export_neighbours).
    """
    load_keys = {"device", "threads", "stride", "mode", "inference_precision", "refine"}
    load_kw = {k: v for k, v in kw.items() if k in load_keys}
    predict_kw = {k: v for k, v in kw.items() if k not in load_keys}
    unknown = set(predict_kw) - {"series_uid", "qa_dir", "export_dir", "export_neighbours"}
    if unknown:
        raise UsageError(f"unknown argument(s) to locate: {', '.join(sorted(unknown))}")
    return L3Locator.load(model, **load_kw).predict(path, **predict_kw)
