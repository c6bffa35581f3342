"""The data behind the review page and its corrections: the results file's key, the levels its model places,
each result's picks per level, and the compact geometry of a QA picture (rows -> z, slice index, UID).

A leaf over result rows (l3edge.report.read_results) and QA geometry files (l3edge.qa.geometry); no model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def float_or_none(v: Any) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


SPINE_ORDER = tuple(
    [f"C{i}" for i in range(1, 8)]
    + [f"T{i}" for i in range(1, 14)]
    + [f"L{i}" for i in range(1, 7)]
    + [f"S{i}" for i in range(1, 6)]
)


def results_key(name: str, rows: Iterable[dict[str, Any]]) -> str:
    """The key of a results file: its name and a hash of the scans it holds (path, series), so that the page's
    stored decisions and ``corrections.csv`` stay with it (a rerun of the same scans keeps the key)."""
    scans = sorted({f"{d['path']}\0{d.get('series_instance_uid') or ''}" for d in rows})
    return f"{name}#{hashlib.sha1(chr(10).join(scans).encode()).hexdigest()[:12]}"


def key_hash(key: str) -> str:
    """The part of :func:`results_key` that identifies the scans (a renamed results file keeps it)."""
    return key.rsplit("#", 1)[-1]


def level_fields(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each level a result places -> its ``z_mm``, ``slice_index``, ``sop_instance_uid`` (own level first)."""
    levels = d.get("levels") or {}
    if isinstance(levels, str):  # a CSV cell
        try:
            levels = json.loads(levels) if levels.strip() else {}
        except ValueError:
            levels = {}
    out: dict[str, dict[str, Any]] = {}
    if d.get("error") is None and d.get("found") and float_or_none(d.get("z_mm")) is not None:
        out[str(d.get("level") or "L3").upper()] = {
            k: d.get(k) for k in ("z_mm", "slice_index", "sop_instance_uid")
        }
    for name, lv in levels.items() if isinstance(levels, dict) else ():
        if isinstance(lv, dict) and float_or_none(lv.get("z_mm")) is not None:
            out.setdefault(
                str(name).upper(), {k: lv.get(k) for k in ("z_mm", "slice_index", "sop_instance_uid")}
            )
    return out


def model_levels(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The levels the results' model places (every level any row names), in spine order."""
    names = set()
    for d in rows:
        names.add(str(d.get("level") or "L3").upper())
        names.update(level_fields(d))
    rank = {n: i for i, n in enumerate(SPINE_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def _runs(values: list[Any]) -> Any:
    """An arithmetic sequence as ``{"a": first, "d": step, "n": count}``; anything else as the list."""
    if len(values) < 3 or any(not isinstance(v, (int, float)) for v in values):
        return values
    step = values[1] - values[0]
    if all(abs(v - (values[0] + i * step)) < 1e-3 for i, v in enumerate(values)):
        return {"a": values[0], "d": round(step, 6), "n": len(values)}
    return values


def _axial(g: dict[str, Any]) -> dict[str, Any] | None:
    """The compact axial view: the panel ``v`` (x, y, w, h in picture px) and the thumbnails ``t`` (file
    ``f``, tile size ``tw`` x ``th``, their step ``s`` in mm, per tile ``z`` and slice index ``k``;
    l3edge.qa_axial); either may be absent."""
    out: dict[str, Any] = {}
    v = g.get("axial_view")
    if isinstance(v, dict):
        out["v"] = [v["x"], v["y"], v["w"], v["h"]]
    a = g.get("axial")
    if isinstance(a, dict) and a.get("z_mm") and len(a["z_mm"]) == len(a["slice_index"]):
        out["t"] = {"f": str(a["file"]), "tw": a["tile_w"], "th": a["tile_h"], "z": _runs(a["z_mm"])}
        out["t"]["s"] = a.get("step_mm", 0)
        out["t"]["k"] = _runs(a["slice_index"])
    return out or None


def read_geometry(png: Path) -> dict[str, Any] | None:
    """The compact geometry of a QA picture (its ``.json`` beside it, l3edge.qa.geometry), or None. With
    axial thumbnails (``predict --qa-axial``) ``ax.t.f`` is the strip's path (absolute; the report makes it
    relative to the page)."""
    try:
        g = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
        uids = list(g["sop_instance_uid"])
        known = [u for u in uids if u]
        prefix = os.path.commonprefix(known) if known else ""
        if len(g["z_mm"]) != len(g["slice_index"]) or len(uids) != len(g["z_mm"]):
            return None
        return {
            "w": g["width"],
            "h": g["height"],
            "mx": g["mip"]["x"],
            "my": g["mip"]["y"],
            "mw": g["mip"]["w"],
            "mh": g["mip"]["h"],
            "zt": g["z_top_mm"],
            "hm": g["height_mm"],
            "z": _runs(g["z_mm"]),
            "k": _runs(g["slice_index"]),
            "u": {"p": prefix, "s": [u[len(prefix) :] if u else None for u in uids]},
            "ax": _with_file(_axial(g), png.parent),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _with_file(ax: dict[str, Any] | None, folder: Path) -> dict[str, Any] | None:
    """``ax`` with its strip's path, or without thumbnails when the file is not there."""
    if ax is None or "t" not in ax:
        return ax
    strip = folder / Path(str(ax["t"]["f"])).name  # a name beside the picture, never a path elsewhere
    if not strip.is_file():
        del ax["t"]
    else:
        ax["t"]["f"] = str(strip.resolve())
    return ax or None


def page_data(
    rows: list[dict[str, Any]], geometries: list[dict[str, Any] | None], key: str
) -> dict[str, Any]:
    """What the page's script needs: the results key, the levels, per card the model's picks and geometry."""
    levels = model_levels(rows)
    default = (
        max(levels, key=lambda n: sum(str(d.get("level") or "L3").upper() == n for d in rows))
        if levels
        else "L3"
    )
    scans = []
    for d, g in zip(rows, geometries, strict=True):
        picks = {
            n: [float_or_none(f["z_mm"]), f.get("slice_index"), f.get("sop_instance_uid") or ""]
            for n, f in level_fields(d).items()
        }
        scans.append({"p": str(d["path"]), "s": d.get("series_instance_uid") or "", "m": picks, "g": g})
    return {"key": key, "levels": levels or ["L3"], "level": default, "scans": scans}
