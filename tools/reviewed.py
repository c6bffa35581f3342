"""A review's decisions (the review page's corrections.csv over a results file) as labelled scan records for
tools.build_cache: accepted and corrected picks label their level at their z, rejected scans label it as not
in view (or unusable). Every row is checked by ``l3edge.corrections.read_corrections`` first."""

from __future__ import annotations

import logging
from pathlib import Path

from tools.data import ScanRecord

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
