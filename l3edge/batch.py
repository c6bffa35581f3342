"""Many scans: ``run(paths, ...)`` -> an iterator of results, in this process, on a local process pool, or on
a Dask cluster, with the same per-scan function, resume and writer for all three.

    >>> from l3edge import batch
    >>> for result in batch.run(["a/", "b/", "c.nii.gz"], workers=2, out="results.jsonl", resume=True):
    ...     print(result.path, result.found, result.z_mm)

The per-scan work is :func:`scan_one`: ``locator.predict(path, **options)``, whose answer may be one result or
several (one input holding several series), with every error turned into an error row. Each back end loads
the model once per worker (:func:`cached_locator`) and streams :class:`ScanOutcome` objects back; this module
writes them to ``out`` (all rows of a scan in one append, so a crash never splits a scan) and yields them.
dask is imported only when a Dask back end is asked for (``l3edge.cluster``); the local pool is
``l3edge.pool``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from l3edge.errors import InputError, L3EdgeError, UsageError
from l3edge.inputs import collect_paths, has_magic
from l3edge.result import L3Result

if TYPE_CHECKING:
    from l3edge.locator import L3Locator

__all__ = [
    "Batch",
    "ScanFunction",
    "ScanOutcome",
    "Summary",
    "cached_locator",
    "collect_paths",
    "default_workers",
    "predict",
    "run",
    "scan_one",
]

log = logging.getLogger(__name__)

EXIT_INPUT = InputError.exit_code


@dataclass(frozen=True)
class ScanOutcome:
    """What one input path gave: its result rows (one, or several for an input with several series)."""

    path: str
    """The input path as given."""
    results: tuple[L3Result, ...]
    """Its rows, in the order the locator gave them; one error row when the scan failed."""
    exit_code: int = 0
    """0, or the exit code of the error that made the scan fail (3 for unreadable input)."""
    traceback: str | None = None
    """The traceback of an unexpected exception (shown with ``-v``), else None."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and all(r.error is None for r in self.results)


def failure(
    path: str, message: str, model: Mapping[str, str] | None = None, code: int = EXIT_INPUT
) -> ScanOutcome:
    """The outcome of a scan that failed (one error row)."""
    text = " ".join(str(message).split())  # one line, whatever the message
    return ScanOutcome(str(path), (L3Result.failure(str(path), text, dict(model or {})),), code)


def model_info(locator: L3Locator) -> dict[str, str]:
    return {"name": locator.metadata.name, "version": locator.metadata.version}


ScanFunction = Callable[["L3Locator", str, dict[str, Any]], "L3Result | Sequence[L3Result]"]
"""A custom per-scan function ``f(locator, path, options)`` returning one result or several."""


def predict(locator: L3Locator, path: str, options: dict[str, Any]) -> L3Result | Sequence[L3Result]:
    """The default per-scan work: ``locator.predict(path, **options)``, or one result per candidate series
    (``locator.predict_all``) when ``series_uid`` is ``all``."""
    if options.get("series_uid") == "all":
        return locator.predict_all(path, **{k: v for k, v in options.items() if k != "series_uid"})
    return locator.predict(path, **options)


def scan_one(
    locator: L3Locator,
    path: str,
    options: Mapping[str, Any] | None = None,
    reraise: bool = False,
    scan: ScanFunction | None = None,
) -> ScanOutcome:
    """The per-scan step of every back end: ``scan(locator, path, options)`` (default :func:`predict`) as an
    outcome.

    Typed errors (unreadable input, ...) become an error row with their exit code; so does any other
    exception (exit code 3, with its traceback), unless ``reraise`` is set (the Dask back end lets the
    cluster retry those).
    """
    try:
        if has_magic(path) and not os.path.exists(path):
            raise InputError(f"{path}: no file or folder matches this pattern")
        answer = (scan or predict)(locator, path, dict(options or {}))
        results = tuple(answer) if isinstance(answer, list | tuple) else (answer,)
        return ScanOutcome(path, results, 0)
    except L3EdgeError as exc:
        return failure(path, str(exc), model_info(locator), exc.exit_code)
    except Exception as exc:
        if reraise:
            raise
        return ScanOutcome(
            path,
            failure(path, f"{type(exc).__name__}: {exc}", model_info(locator)).results,
            EXIT_INPUT,
            traceback.format_exc(),
        )


_LOCATORS: dict[str, L3Locator] = {}
_LOCATORS_LOCK = threading.Lock()


def cached_locator(load: Mapping[str, Any]) -> L3Locator:
    """The locator for ``L3Locator.load(**load)``, loaded once per process (a worker's model).

    Raises:
        ModelError, UsageError: from ``L3Locator.load``.
    """
    from l3edge.locator import L3Locator

    key = json.dumps(dict(load), sort_keys=True, default=str)
    with _LOCATORS_LOCK:  # a Dask worker runs tasks in several threads; they share one (thread-safe) locator
        locator = _LOCATORS.get(key)
        if locator is None:
            locator = _LOCATORS[key] = L3Locator.load(**load)
        return locator


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
        options: Mapping[str, Any],
        scan: ScanFunction | None = None,
        locator: L3Locator | None = None,
    ) -> None:
        self.load, self.options, self.scan, self.locator = dict(load), dict(options), scan, locator

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
    options: Mapping[str, Any] | None = None,
    workers: int | None = None,
    dask: str | Any | None = None,
    timeout: float | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    locator: L3Locator | None = None,
    scan: ScanFunction | None = None,
) -> Batch:
    """Locate L3 in many scans; returns an iterator of results (:class:`Batch`) as they finish.

    The model is loaded (in every worker) before this returns, so a bad model raises here and no ``out``
    file is written.

    Args:
        paths: scans (DICOM folders, NIfTI files); see :func:`collect_paths` for lists and glob patterns.
        load: keyword arguments of ``L3Locator.load`` (model, device, threads, stride, mode, ...), used by
            every worker. ``threads`` defaults to the cores divided among the local workers.
        options: keyword arguments of ``L3Locator.predict`` for every scan (series_uid, qa_dir, ...).
            They travel to the workers, so they must pickle, and paths in them must be absolute for Dask.
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
            ``locator.predict(path, **options)``; a module-level function, so that workers can import it.

    Raises:
        UsageError: inconsistent arguments, or an ``out`` that cannot be used.
        ModelError: the model cannot be loaded.
    """
    from l3edge.output import ResultWriter

    load, options = dict(load or {}), dict(options or {})
    todo, seen = [], set()
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:  # the same scan twice (a list and a pattern overlapping) runs once
            seen.add(key)
            todo.append(str(p))
    if resume and out is None:
        raise UsageError("resume needs an out file to know which scans are done")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"timeout must be > 0 seconds, not {timeout}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be >= 1, not {workers}")
    if dask is not None and workers is not None:
        raise UsageError("choose either local workers or a Dask cluster, not both")
    writer = ResultWriter(out) if out is not None else None
    summary = Summary()
    if writer is not None and resume:
        done = writer.done_paths()
        summary.skipped = sum(os.path.abspath(p) in done for p in todo)
        todo = [p for p in todo if os.path.abspath(p) not in done]
    summary.total = len(todo)
    # More workers than scans would only load models: at most one worker per scan.
    n = min(workers, max(1, len(todo))) if workers is not None else default_workers(len(todo))
    backend: Backend
    if dask is not None:
        from l3edge.cluster import DaskBackend

        backend = DaskBackend(dask, load, options, timeout, scan)
    elif n > 1 or timeout is not None:
        from l3edge.pool import ProcessPool

        if load.get("threads") is None:  # share the cores: each worker's inference gets its part
            load["threads"] = max(1, default_workers() // n)
        backend = ProcessPool(n, load, options, timeout, scan)
    else:
        backend = InProcess(load, options, scan, locator)
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
