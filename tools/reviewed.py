"""A review's decisions (the review page's corrections.csv over a results file) as labelled scan records for
tools.build_cache: accepted and corrected picks label their level at their z, rejected scans label it as not
in view (or unusable). Every row is checked by ``l3edge.corrections.read_corrections`` first."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from l3edge.errors import UsageError
from tools.data import INDEX_NAME, ScanRecord

log = logging.getLogger("tools.build_cache")


def correction_records(results: Path, corrections: Path) -> list[ScanRecord]:
    """The decided scans of a review as labelled records (l3edge.corrections checks every row first)."""
    from l3edge.corrections import read_corrections

    corr = read_corrections(corrections, results)
    for note in corr.notes:
        log.warning("%s", note)
    out = []
    for d in corr.decisions:
        z = d.z_mm
        k = d.slice_index if z is None else None
        sop = d.sop_instance_uid if z is None and k is None else None
        tag = f"{d.series_instance_uid}|{d.decision}|{z}|{k}|{sop}"
        out.append(ScanRecord(Path(d.path), z, k, sop, d.level, False, d.series_instance_uid, tag))
    return out


def drop_stale(folder: Path, wanted: set[str]) -> int:
    """A review's cache holds that review's decisions only: entries of an earlier version of the review (a
    decision since changed is cached under a new id) are removed. Returns how many.

    Raises:
        UsageError: ``folder`` holds a cache of something else.
    """
    index = folder / INDEX_NAME
    if not index.is_file():
        return 0
    if json.loads(index.read_text()).get("info", {}).get("kind") != "corrections":
        raise UsageError(f"{folder} holds another kind of cache; give a review's cache a folder of its own")
    stale = [p for p in folder.glob("*.npz") if not p.name.startswith(".") and p.stem not in wanted]
    for p in stale:
        p.unlink()
    if stale:
        log.warning("%d cached scans of an earlier version of this review removed", len(stale))
    return len(stale)
