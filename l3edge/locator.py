"""The public API: a reusable L3 locator and a one-shot ``locate``. A facade: it loads and checks the model
and the options, then hands down.

Per scan, downwards only: open the scan (``l3edge.scan``) -> choose the series or answer each
(``l3edge.study``) -> the answer for one projection (``l3edge.answer``: model space, windows through the model
as is and mirrored, per-level ramp fit and ladder, refinement, nearest slice, confidence and review) -> the
QA picture and the export from one slice reader (``l3edge.attach``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from l3edge import scan as reading
from l3edge import study
from l3edge.answer import Engine
from l3edge.answer import locate as locate_projection
from l3edge.attach import reader_of, with_qa
from l3edge.errors import ModelError, UsageError
from l3edge.metadata import ModelMetadata
from l3edge.options import PredictOptions
from l3edge.result import L3Result
from l3edge.runtime import CacheDir, ModelLocation, OVModel, resolve_model
from l3edge.scan import Scan
from l3edge.series import Projection

Mode = Literal["auto", "strip", "window"]
MODES: tuple[str, ...] = ("auto", "strip", "window")
MEMORY_PATH = "<memory>"


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

    def engine(self, stride: int | None = None, level: str | None = None) -> Engine:
        """This locator's model with ``stride`` (default: the locator's) and ``level`` (default: the model's)
        checked: what ``l3edge.answer`` and ``l3edge.study`` run.

        Raises:
            UsageError: a stride the model cannot use, or a level it does not place.
        """
        s = self.stride if stride is None else self._check_stride(stride)
        output_stride = self.metadata.output_stride_px if self._strip_mode(s) else None
        return Engine(self.model, self.refiner, self.mirror, s, output_stride, self.check_level(level))

    def predict(
        self, path: str | os.PathLike[str] | Scan, options: PredictOptions | None = None, **kwargs: Any
    ) -> L3Result:
        """Locate L3 (or ``level``) in the scan at ``path`` (DICOM folder, zip archive of one, or NIfTI file).

        When a DICOM study holds several axial CT series, each candidate is read once, in a documented
        preference order, and the one where the level is found best is reported (``l3edge.dicom_choice``);
        ``series_choice`` says why and ``warnings`` lists the others.

        Args:
            path: the scan, or a ``Scan`` from ``l3edge.scan.open_scan`` (closed when done).
            options: a :class:`~l3edge.options.PredictOptions`; keyword arguments (its field names) go on top:
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
        opts = _options(options, kwargs)
        if opts.all_series:
            raise UsageError("all_series gives one result per series: call predict_all")
        engine = self.engine(opts.stride, opts.level)
        scan, where = self._open(path, opts)
        with scan:
            return study.predict_scan(engine, scan, where, opts)

    def predict_all(
        self, path: str | os.PathLike[str] | Scan, options: PredictOptions | None = None, **kwargs: Any
    ) -> list[L3Result]:
        """One result per candidate series of the scan (``--series all``), most preferred first; a candidate
        that cannot be read gets a result with its ``error``. Arguments as for :meth:`predict` (``series_uid``
        aside); QA pictures and exports of a multi-series scan go into one subfolder per series.

        Raises:
            InputError: the scan has no candidate series at all.
        """
        opts = replace(_options(options, kwargs), series_uid=None, all_series=True)
        engine = self.engine(opts.stride, opts.level)
        scan, where = self._open(path, opts)
        with scan:
            return study.predict_each(engine, scan, where, opts)

    def _open(self, path: str | os.PathLike[str] | Scan, options: PredictOptions) -> tuple[Scan, str]:
        if isinstance(path, Scan):
            return path, str(path.path)
        threads = options.threads if options.threads is not None else self.threads
        return reading.open_scan(Path(path), options.series_uid, threads), str(path)

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
        answer = locate_projection(self.engine(stride, level), projection, where, read_ms)
        if qa_dir is not None:
            answer = with_qa(answer, projection, qa_dir, reader_of(projection))
        return answer.result

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


def _options(options: PredictOptions | None, kwargs: dict[str, Any]) -> PredictOptions:
    if options is not None and not isinstance(options, PredictOptions):
        raise TypeError(
            f"predict's second argument is a PredictOptions, not {type(options).__name__}: pass series_uid= "
            "and the other options by keyword"
        )
    return PredictOptions.of(options, **kwargs)


def locate(path: str | os.PathLike[str], model: str | os.PathLike[str] | None = None, **kw: Any) -> L3Result:
    """One-shot: load the model and locate L3 in one scan.

    Keyword arguments go to :meth:`L3Locator.load` (device, threads, stride, mode, inference_precision,
    refine, mirror) or to :meth:`L3Locator.predict` (series_uid, qa_dir, level, export_dir,
    export_neighbours).
    """
    load_keys = {
        "device",
        "threads",
        "stride",
        "mode",
        "inference_precision",
        "refine",
        "mirror",
        "cache_dir",
    }
    load_kw = {k: v for k, v in kw.items() if k in load_keys}
    predict_kw = {k: v for k, v in kw.items() if k not in load_keys}
    try:
        options = PredictOptions.of(predict_kw)
    except UsageError as exc:
        raise UsageError(f"locate: {exc}") from None
    return L3Locator.load(model, **load_kw).predict(path, options)
