"""Fault functions for the service tests (``--scan-function tests.serve_helpers:faulty``, imported by name in
the server process); the real parts themselves start in ``tools.service``."""

from __future__ import annotations

import contextlib
import time
import zipfile
from typing import Any

from tools.service import ROOT, free_port, serve, zip_folder

__all__ = ["ROOT", "faulty", "free_port", "serve", "zip_folder"]


def faulty(locator: Any, path: str, options: dict[str, Any]) -> Any:
    """A zip with a member named ``boom`` raises an unexpected exception, ``hang`` sleeps 6 s; else
    predicts as the server would."""
    names: set[str] = set()
    if path.endswith(".zip"):
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as z:
            names = set(z.namelist())
        if "boom" in names:
            raise RuntimeError("synthetic failure")
        if "hang" in names:
            time.sleep(6)
    from l3edge.batch import predict

    return predict(locator, path, options)
