"""Per-scan functions for the batch tests (``l3edge.batch.run(scan=...)``): worker processes import them by
name, so faults can be injected into real workers. The scan's folder name says what happens to it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


def faulty(locator: Any, path: str, options: dict[str, Any]) -> Any:
    """``segv*``: a real segmentation fault; ``oom*``: SIGKILL (what the OOM killer sends); ``hang*``: sleeps
    far past any test timeout; ``boom*``: an unexpected exception; ``flaky*``: an exception the first time
    (a marker file beside the scan remembers it), then a normal result. Anything else: the normal result."""
    name = Path(path).name
    if name.startswith("segv"):
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if name.startswith("oom"):
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("hang"):
        time.sleep(120)
    if name.startswith("boom"):
        with Path(path).with_name(name + ".attempts").open("a") as f:  # the test counts the attempts
            f.write("1\n")
        raise RuntimeError("synthetic failure")
    if name.startswith("flaky"):
        marker = Path(path).with_name(name + ".tried")
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("fails the first time only")
    return locator.predict(path, **options)


def report_modules(locator: Any, path: str, options: dict[str, Any]) -> Any:
    """The normal result, with a warning that says whether this worker has imported dask."""
    result = locator.predict(path, **options)
    loaded = sorted(m for m in ("dask", "distributed") if m in sys.modules)
    return replace(result, warnings=(*result.warnings, f"modules: {','.join(loaded) or 'none'}"))


def two_rows(locator: Any, path: str, options: dict[str, Any]) -> Any:
    """Two result rows for one input (as ``--series all`` gives for a folder with two series)."""
    result = locator.predict(path, **options)
    return [result, replace(result, series_instance_uid="1.2.3.second")]
