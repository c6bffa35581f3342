"""One scan of a batch: the step every back end (in process, ``l3edge.pool``, ``l3edge.cluster``) runs.

:func:`scan_one` answers one path with a locator and :class:`PredictOptions`: ``locator.predict`` (or
``predict_all`` for ``all_series``), or a custom per-scan function, with every error turned into an error row
(:class:`ScanOutcome`). :func:`cached_locator` gives each worker process its one loaded model. This module
sits below the back ends and ``l3edge.batch`` (which dispatches to them) and above the locator.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from l3edge.errors import InputError, L3EdgeError
from l3edge.inputs import has_magic
from l3edge.options import PredictOptions
from l3edge.result import L3Result

if TYPE_CHECKING:
    from l3edge.locator import L3Locator

EXIT_INPUT = InputError.exit_code

ScanFunction = Callable[["L3Locator", str, dict[str, Any]], "L3Result | Sequence[L3Result]"]
"""A custom per-scan function ``f(locator, path, options)`` returning one result or several; ``options`` are
keyword arguments of ``L3Locator.predict`` (:meth:`PredictOptions.kwargs`)."""


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


def predict(
    locator: L3Locator, path: str, options: PredictOptions | Mapping[str, Any]
) -> L3Result | list[L3Result]:
    """The default per-scan work: ``locator.predict(path, options)``, or one result per candidate series
    (``locator.predict_all``) with ``all_series``."""
    opts = PredictOptions.of(options)
    if opts.all_series:
        return locator.predict_all(path, opts)
    return locator.predict(path, opts)


def scan_one(
    locator: L3Locator,
    path: str,
    options: PredictOptions | Mapping[str, Any] | None = None,
    reraise: bool = False,
    scan: ScanFunction | None = None,
) -> ScanOutcome:
    """The per-scan step of every back end: :func:`predict` (or ``scan(locator, path, options.kwargs())``)
    as an outcome.

    Typed errors (unreadable input, ...) become an error row with their exit code; so does any other
    exception (exit code 3, with its traceback), unless ``reraise`` is set (the Dask back end lets the
    cluster retry those).
    """
    try:
        opts = PredictOptions.of(options)
        if has_magic(path) and not os.path.exists(path):
            raise InputError(f"{path}: no file or folder matches this pattern")
        answer = predict(locator, path, opts) if scan is None else scan(locator, path, opts.kwargs())
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
