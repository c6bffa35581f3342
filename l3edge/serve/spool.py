"""The DICOM node's spool: every received instance on disk as it arrives, one folder per series.

Layout: ``<spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` (UIDs are digits and dots,
checked; no patient data in any name). Each file is written under a temporary name and renamed, so a killed
node never leaves half an instance. A series folder lives until its result row is written (and sent back);
a node that restarts finds the folders still there and finishes them (:meth:`Spool.pending`). An
``aborted`` marker in a series folder records that an association was aborted while delivering it.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from l3edge.errors import InputError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
ABORTED = "aborted"


def check_uid(value: object, what: str) -> str:
    """A UID usable as a folder name (at most 64 characters of digits and dots).

    Raises:
        InputError: anything else.
    """
    text = str(value or "").strip()
    if len(text) > 64 or not _UID.match(text):
        raise InputError(f"the instance's {what} is not a valid UID")
    return text


@dataclass
class Pending:
    """A series in the spool: its folder, when its last instance came, and how many came."""

    folder: Path
    last: float
    count: int = 0
    aborted: bool = False
    running: bool = False
    leftover: bool = False
    """Found in the spool when the node started (its row may already be written)."""
    again: bool = False
    """Instances came while it was being predicted: it is predicted again (nothing received is lost)."""

    @property
    def study_uid(self) -> str:
        return self.folder.parent.name

    @property
    def series_uid(self) -> str:
        return self.folder.name


class Spool:
    """Received instances by series, and which series are waiting (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._series: dict[Path, Pending] = {}
        for study in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for folder in sorted(p for p in study.iterdir() if p.is_dir()):
                n = sum(1 for f in folder.glob("*.dcm"))
                self._series[folder] = Pending(folder, 0.0, n, (folder / ABORTED).exists(), leftover=True)

    def store(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance (a DICOM file's bytes) into its series folder.

        Raises:
            OSError: the disk refused it.
        """
        folder = self.root / study_uid / series_uid
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            out = folder / f"{sop_uid}.dcm"
            tmp = folder / f".{sop_uid}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, out)
            pending = self._series.get(folder)
            if pending is None:
                pending = self._series[folder] = Pending(folder, time.monotonic())
            pending.again = pending.again or pending.running
            pending.last = time.monotonic()
            pending.count += 1
        return out

    def mark_aborted(self, folders: set[Path]) -> None:
        """Record that an association delivering these series was aborted."""
        with self._lock:
            for folder in folders:
                pending = self._series.get(folder)
                if pending is not None and not pending.running:
                    pending.aborted = True
                    (folder / ABORTED).touch()

    def take_idle(self, idle_s: float) -> list[Pending]:
        """The series without a new instance for ``idle_s`` seconds (a restart's leftovers at once), marked
        as running."""
        now = time.monotonic()
        with self._lock:
            ready = [p for p in self._series.values() if not p.running and now - p.last >= idle_s]
            for p in ready:
                p.running = True
        return ready

    def done(self, pending: Pending) -> None:
        """The series' result is written: remove its folder (unless instances came meanwhile: then it waits
        for its idle time again)."""
        with self._lock:
            if pending.again:
                pending.running = pending.again = False
                return
            if self._series.get(pending.folder) is pending:
                del self._series[pending.folder]
                shutil.rmtree(pending.folder, ignore_errors=True)
                if pending.folder.parent.is_dir() and not any(pending.folder.parent.iterdir()):
                    pending.folder.parent.rmdir()

    def waiting(self) -> int:
        with self._lock:
            return len(self._series)
