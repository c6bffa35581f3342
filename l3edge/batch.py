"""Many scans: ``run(paths, ...)`` -> an iterator of results, in this process, on a local process pool, or on
a Dask cluster, with the same per-scan function, resume and writer for all three.

    >>> from l3edge import batch
    >>> for result in batch.run(["a/", "b/", "c.nii.gz"], workers=2, out="results.jsonl", resume=True):
    ...     print(result.path, result.found, result.z_mm)

The per-scan work is ``l3edge.job.scan_one``: ``locator.predict(path, options)``, whose answer may be one
result or several (one input holding several series), with every error turned into an error row. ``run``
checks its arguments and the :class:`PredictOptions` once, then dispatches to a back end: each loads the model
once per worker (``l3edge.job.cached_locator``) and streams :class:`ScanOutcome` objects back; this module
writes them to ``out`` (all rows of a scan in one append, so a crash never splits a scan) and yields them.
dask is imported only when a Dask back end is asked for (``l3edge.cluster``); the local pool is
``l3edge.pool``. Layers: batch -> pool / cluster -> job -> locator; nothing below imports upwards.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from l3edge.errors import UsageError
from l3edge.inputs import collect_paths
from l3edge.job import ScanFunction, ScanOutcome, cached_locator, failure, model_info, predict, scan_one
from l3edge.options import PredictOptions
from l3edge.result import L3Result

if TYPE_CHECKING:
    from l3edge.locator import L3Locator

__all__ = [
    "Batch",
    "PredictOptions",
    "ScanFunction",
    "ScanOutcome",
    "Summary",
    "cached_locator",
    "collect_paths",
    "default_workers",
    "failure",
    "predict",
    "run",
    "scan_one",
]

log = logging.getLogger(__name__)


def default_workers(n_scans: int | None = None) -> int:
    """The number of cores this process may use, at most ``n_scans``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_scans) if n_scans is not None else cores)


class Backend(Protocol):
    """Runs :func:`scan_one` on many paths somewhere."""

    def start(self) -> dict[str, str]:
        """Load the model where the scans will run (at least once); return its name and version.

        Raises:
            ModelError, UsageError: the model cannot be loaded, or the back end cannot start.
        """

    def outcomes(self, paths: Sequence[str]) -> Iterator[ScanOutcome]:
        """One outcome per path, in the order they finish."""

    def close(self) -> None:
        """Stop the workers (idempotent)."""


class InProcess:
    """Every scan in this process, one after another (``--workers 1``)."""

    def __init__(
        self,
        load: Mapping[str, Any],
        options: PredictOptions,
        scan: ScanFunction | None = None,
        locator: L3Locator | None = None,
    ) -> None:
        self.load, self.options, self.scan, self.locator = dict(load), options, scan, locator

    def start(self) -> dict[str, str]:
        if self.locator is None:
            from l3edge.locator import L3Locator

            self.locator = L3Locator.load(**self.load)
        return model_info(self.locator)

    def outcomes(self, paths: Sequence[str]) -> Iterator[ScanOutcome]:
        assert self.locator is not None, "start() first"
        for path in paths:
            yield scan_one(self.locator, path, self.options, scan=self.scan)

    def close(self) -> None:
        pass


@dataclass
class Summary:
    """Counts over a batch so far."""

    total: int = 0
    """Scans to run (after --resume skipped the done ones)."""
    skipped: int = 0
    """Scans skipped because ``out`` already has an error-free row for them."""
    scans: int = 0
    """Scans finished."""
    rows: int = 0
    found: int = 0
    not_found: int = 0
    review: int = 0
    """Rows flagged for a person to check (``review``)."""
    errors: int = 0
    """Error rows."""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def add(self, outcome: ScanOutcome) -> None:
        self.scans += 1
        for r in outcome.results:
            self.rows += 1
            if r.error is not None:
                self.errors += 1
            elif r.found:
                self.found += 1
            else:
                self.not_found += 1
            self.review += bool(r.review)

    @property
    def wall_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def scans_per_min(self) -> float:
        return 60.0 * self.scans / self.wall_s if self.wall_s > 0 else 0.0


class Batch:
    """An iterator of results over many scans (see :func:`run`). Iterate it, or :meth:`scans` for outcomes.

    Attributes ``summary`` (counts so far), ``exit_code`` (0, or the worst error's code) and ``paths`` (what
    runs) are updated as outcomes arrive. Closing it (or leaving a ``with`` block) stops the workers.
    """

    def __init__(self, paths: list[str], backend: Backend | None, writer: Any, summary: Summary) -> None:
        self.paths = paths
        self.summary = summary
        self.exit_code = 0
        self.model: dict[str, str] = {}
        self._backend = backend
        self._writer = writer
        self._iterator: Generator[ScanOutcome, None, None] | None = None

    def scans(self) -> Iterator[ScanOutcome]:
        """One :class:`ScanOutcome` per scan, written to ``out`` before it is yielded."""
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    def _run(self) -> Generator[ScanOutcome, None, None]:
        try:
            if self._backend is not None and self.paths:
                for outcome in self._backend.outcomes(self.paths):
                    if self._writer is not None:
                        self._writer.write_many(outcome.results)
                    self.summary.add(outcome)
                    self.exit_code = max(self.exit_code, outcome.exit_code)
                    yield outcome
            self.summary.finished = time.monotonic()
        finally:
            self.close()

    def __iter__(self) -> Iterator[L3Result]:
        for outcome in self.scans():
            yield from outcome.results

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._iterator is not None:
            self._iterator.close()
        self.close()


def run(
    paths: Iterable[str | os.PathLike[str]],
    *,
    load: Mapping[str, Any] | None = None,
    options: PredictOptions | Mapping[str, Any] | None = None,
    workers: int | None = None,
    dask: str | Any | None = None,
    timeout: float | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    locator: L3Locator | None = None,
    scan: ScanFunction | None = None,
) -> Batch:
    """Locate L3 in many scans; returns an iterator of results (:class:`Batch`) as they finish.

    Every argument is checked here, before any model is loaded; then the model is loaded (in every worker)
    before this returns, so a bad model raises here and no ``out`` file is written.

    Args:
        paths: scans (DICOM folders, NIfTI files); see :func:`collect_paths` for lists and glob patterns.
        load: keyword arguments of ``L3Locator.load`` (model, device, threads, stride, mode, ...), used by
            every worker. ``threads`` defaults to the cores divided among the local workers.
        options: the :class:`PredictOptions` of every scan, or a mapping of its fields (the keyword
            arguments of ``L3Locator.predict``, plus ``all_series``). They travel to the workers, so paths in
            them must be absolute for Dask. A level the model does not place is refused here.
        workers: local worker processes (default: the number of cores, at most the number of scans);
            1 runs in this process, unless ``timeout`` is given (then one worker process, so that a scan
            past its time can be stopped).
        dask: a ``dask.distributed`` scheduler address or Client: run the scans as tasks there
            (``pip install "l3edge[dask]"``; the paths must be readable by the workers).
        timeout: seconds per scan before it is reported as an error row.
        out: append every result to this .csv or .jsonl file (one complete line at a time).
        resume: skip the scans that already have an error-free row in ``out``.
        locator: an already loaded locator for the in-process run (``workers=1``).
        scan: a per-scan function ``f(locator, path, options)`` returning one result or several, instead of
            ``locator.predict(path, **options)`` (``options``: :meth:`PredictOptions.kwargs`); a module-level
            function, so that workers can import it.

    Raises:
        UsageError: inconsistent arguments, or an ``out`` or ``export_dir`` that cannot be used.
        ModelError: the model cannot be loaded.
    """
    from l3edge.output import ResultWriter

    load, opts = dict(load or {}), PredictOptions.of(options)
    _check(load, opts, workers, dask, timeout, out, resume, locator)
    todo, seen = [], set()
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:  # the same scan twice (a list and a pattern overlapping) runs once
            seen.add(key)
            todo.append(str(p))
    writer = ResultWriter(out) if out is not None else None
    summary = Summary()
    if writer is not None:
        writer.check()
        if resume:
            done = writer.done_paths()
            summary.skipped = sum(os.path.abspath(p) in done for p in todo)
            todo = [p for p in todo if os.path.abspath(p) not in done]
    summary.total = len(todo)
    # More workers than scans would only load models: at most one worker per scan.
    n = min(workers, max(1, len(todo))) if workers is not None else default_workers(len(todo))
    backend: Backend
    if dask is not None:
        from l3edge.cluster import DaskBackend

        backend = DaskBackend(dask, load, opts, timeout, scan)
    elif n > 1 or timeout is not None:
        from l3edge.pool import ProcessPool

        if load.get("threads") is None:  # share the cores: each worker's inference gets its part
            load["threads"] = max(1, default_workers() // n)
        backend = ProcessPool(n, load, opts, timeout, scan)
    else:
        backend = InProcess(load, opts, scan, locator)
    batch = Batch(todo, backend, writer, summary)
    if todo:
        try:
            batch.model = backend.start()
            if writer is not None:
                writer.open()
        except BaseException:
            backend.close()
            raise
    log.info("%d scans to run (%d skipped) on %s", len(todo), summary.skipped, type(backend).__name__)
    return batch


def _check(
    load: Mapping[str, Any],
    options: PredictOptions,
    workers: int | None,
    dask: str | Any | None,
    timeout: float | None,
    out: str | os.PathLike[str] | None,
    resume: bool,
    locator: L3Locator | None,
) -> None:
    """The checks of :func:`run` that need no model loaded: every usage error before any work."""
    if resume and out is None:
        raise UsageError("resume (--resume) needs an out file (--out FILE) to know which scans are done")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"timeout must be > 0 seconds, not {timeout}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be >= 1, not {workers}")
    if dask is not None and workers is not None:
        raise UsageError(
            "choose either local workers (--workers) or a Dask cluster (--dask), not both: on a cluster "
            "its workers run the scans"
        )
    if options.level is not None:  # a level the model does not place: before any scan, from its metadata
        if locator is not None:
            locator.check_level(options.level)
        else:
            from l3edge.runtime import load_metadata, resolve_model

            path = resolve_model(load.get("model")).path
            known = load_metadata(path, cache_dir=load.get("cache_dir")).model_levels
            if options.level not in known:
                raise UsageError(
                    f"level (--level): this model places {', '.join(known)}, not {options.level!r}"
                )
    if options.export_dir is not None:
        try:
            os.makedirs(options.export_dir, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{options.export_dir}: cannot create the --export folder ({exc.strerror})"
            ) from None
