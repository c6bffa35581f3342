"""The review page: one self-contained HTML file over a results file, for a person checking a cohort's picks.

A leaf that takes results (rows of ``--out``, .jsonl or .csv) and the QA pictures they name (``--qa``); no
model, no network. Each scan gets a card: a thumbnail of its QA picture (the MIP with the level, the axial
slice there), its result and confidence. Scans flagged ``review`` come first, then errors, then not found,
then the rest; each group by ascending confidence. A filter box (text and status) and the counts sit at the
top; ``report.html#q=TEXT`` opens it filtered. Thumbnails are embedded (JPEG data URIs; the page is one file)
or, with ``embed=False``, written beside it in ``<name>_thumbs/`` (smaller page for large cohorts). A
card links to its full QA picture (relative path, so the folder can move as a whole).

The page is also the review tool: its script (``l3edge/static/review.js``, inlined here with the style) lets a
person accept, reject or correct each scan's pick (a click on the MIP snaps to the nearest slice, through the
picture's geometry from ``l3edge.qa.geometry``, carried in the page as JSON with the model's picks per level,
``l3edge.review.page_data``), keeps the decisions in localStorage and downloads or imports ``corrections.csv``
(``l3edge.corrections``). Once its script has run, the page's root element carries ``data-ui`` (handlers
bound), ``data-ready`` and ``data-thumbs`` (embedded thumbnails decoded), ``data-shown``, ``data-decided``,
``data-left``, ``data-cur`` (the card in focus), ``data-row`` (its line's MIP row), ``data-ax`` (the axial
thumbnail shown, below), ``data-level`` and ``data-msg``, for checks in a browser.

Axial view: where ``predict --qa-axial N`` wrote axial thumbnails beside a QA picture
(``l3edge.qa_axial``), the card shows, over the picture's own axial slice, the thumbnail nearest the z of
its line (the decision's, or the model's pick on the card in focus), and follows clicks and ↑/↓. The strips
are linked, never embedded (relative to the page, as the full picture; fetched when a card first shows
one), so the page's size does not grow with them; where a strip cannot be loaded, or the picture has no
axial slice, the picture shows as it is.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from l3edge.errors import InputError, UsageError
from l3edge.review import float_or_none as _float
from l3edge.review import page_data, read_geometry, results_key

THUMB_HEIGHT_PX = 220
STATUS_ORDER = ("review", "error", "not found", "found")


@dataclass(frozen=True)
class ReportInfo:
    """What :func:`write_report` wrote."""

    path: Path
    rows: int
    """Cards on the page."""
    counts: dict[str, int]
    """Cards per status (``review``, ``error``, ``not found``, ``found``)."""
    pictures: int
    """Cards with a thumbnail."""
    missing_pictures: int
    """Cards whose row names a QA picture that cannot be read (or names none)."""


def _bool(v: Any) -> bool:
    return v is True or str(v).strip().lower() in ("true", "1", "yes")


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a results file (.jsonl/.ndjson or .csv), as dicts; an incomplete last line is ignored.

    Raises:
        InputError: the file cannot be read, or a line is not a result.
    """
    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise InputError(f"{where}: cannot read the results file: {why}") from exc
    complete = text[: text.rfind("\n") + 1] if not text.endswith("\n") else text  # a killed run's last line
    rows: list[dict[str, Any]] = []
    if where.suffix.lower() == ".csv":
        for row in csv.DictReader(io.StringIO(complete)):
            d: dict[str, Any] = dict(row)
            d["warnings"] = [w for w in (row.get("warnings") or "").split("; ") if w]
            rows.append(d)
    else:
        for i, line in enumerate(complete.splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                raise InputError(
                    f"{where}: line {i} is not JSON; pass a --out file of l3edge predict"
                ) from None
            if not isinstance(d, dict) or "path" not in d:
                raise InputError(f"{where}: line {i} is not an l3edge result (no 'path')")
            rows.append(d)
    for d in rows:
        d["found"], d["review"] = _bool(d.get("found")), _bool(d.get("review"))
        d["error"] = d.get("error") or None
        d["confidence"] = _float(d.get("confidence"))
    return rows


def latest(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One card per scan (per series for inputs with several): a scan retried by ``--resume`` shows its
    successful rows, one that never succeeded its last error."""
    good: dict[str, dict[str, dict[str, Any]]] = {}
    bad: dict[str, dict[str, Any]] = {}
    for d in rows:
        p = str(d["path"])
        if d["error"] is None:
            good.setdefault(p, {})[str(d.get("series_instance_uid") or "")] = d
        else:
            bad[p] = d
    out = [d for series in good.values() for d in series.values()]
    return out + [d for p, d in bad.items() if p not in good]


def status(d: dict[str, Any]) -> str:
    if d["review"]:
        return "review"
    if d["error"] is not None:
        return "error"
    return "found" if d["found"] else "not found"


def sort_key(d: dict[str, Any]) -> tuple[int, float, str]:
    conf = d["confidence"] if d["confidence"] is not None else -1.0
    return STATUS_ORDER.index(status(d)), conf, str(d["path"])


def qa_file(d: dict[str, Any], results_dir: Path) -> Path | None:
    q = d.get("qa_path")
    if not q:
        return None
    p = Path(q)
    for candidate in (p, results_dir / p) if not p.is_absolute() else (p,):
        if candidate.is_file():
            return candidate
    return None


def _thumbnail(png: Path, height: int) -> bytes | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(png) as opened:
            rgb = opened.convert("RGB")
        scale = height / max(rgb.height, 1)
        small = rgb.resize((max(1, round(rgb.width * scale)), height), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=85)
        return buf.getvalue()
    except (OSError, UnidentifiedImageError):
        return None


def _fmt(v: Any, spec: str = "") -> str:
    if v is None or v == "":
        return "-"
    try:
        return format(float(v), spec) if spec else str(v)
    except (TypeError, ValueError):
        return str(v)


def _card(d: dict[str, Any], i: int, img: str | None, link: str | None) -> str:
    e = html.escape
    st = status(d)
    path = str(d["path"])
    name = os.path.basename(path.rstrip("/\\")) or path
    if d["error"] is not None:
        detail = f'<p class="err">{e(str(d["error"]))}</p>'
    elif d["found"]:
        detail = (
            f"<p>{e(str(d.get('level') or 'L3'))} at z = {_fmt(d.get('z_mm'), '.1f')} mm, slice index "
            f"{_fmt(d.get('slice_index'))} (instance {_fmt(d.get('instance_number'))}) of "
            f"{_fmt(d.get('n_slices'))}</p>"
        )
    else:
        presence = _fmt(d.get("presence"), ".2f")
        detail = f"<p>not found in {_fmt(d.get('n_slices'))} slices (presence {presence})</p>"
    warnings = d.get("warnings") or []
    warn = "".join(f"<li>{e(str(w))}</li>" for w in warnings)
    missing = "QA picture missing" if d.get("qa_path") else "no QA picture (predict --qa DIR)"
    lazy = "" if img is None or img.startswith("data:") else ' loading="lazy"'  # files: fetched when in view
    picture = (
        f'<div class="pic"><img src="{e(img)}"{lazy} alt="QA picture of {e(name)}"></div>'
        if img
        else f'<div class="noimg">{missing}</div>'
    )
    full = f' <a href="{e(link)}">full picture</a>' if img and link else ""
    conf = "" if d["error"] is not None else f"<p>confidence {_fmt(d['confidence'], '.2f')}{full}</p>"
    text = " ".join([path, st, str(d.get("error") or ""), *map(str, warnings)]).lower()
    return (
        f'<article class="card {st.replace(" ", "-")}" data-status="{e(st)}" '
        f'data-text="{e(text)}" data-i="{i}">{picture}<div><h2>{e(name)} <span class="badge">{e(st)}</span>'
        f'<span class="dec"></span></h2><p class="path">{e(path)}</p>{detail}{conf}'
        f"{'<ul>' + warn + '</ul>' if warn else ''}</div></article>"
    )


def _static(name: str) -> str:
    return (resources.files("l3edge") / "static" / name).read_text(encoding="utf-8")


_HELP = (
    "Keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>a</kbd> accept, <kbd>r</kbd> reject, "
    "<kbd>&uarr;</kbd>/<kbd>&darr;</kbd> move the line one slice, a click on the MIP puts it on that row, "
    "<kbd>Enter</kbd> next undecided, <kbd>u</kbd> undo, <kbd>l</kbd> next level, <kbd>/</kbd> filter, "
    "<kbd>d</kbd> download corrections.csv, <kbd>?</kbd> this help."
)


def render(
    rows: list[dict[str, Any]],
    images: list[tuple[str | None, str | None]],
    title: str,
    data: dict[str, Any] | None = None,
) -> str:
    """The page for ``rows`` (already sorted), their (thumbnail src, full picture link) and the script's data
    (:func:`page_data`)."""
    e = html.escape
    data = data if data is not None else page_data(rows, [None] * len(rows), "")
    counts = {k: sum(status(d) == k for d in rows) for k in STATUS_ORDER}
    summary = ", ".join(f"{counts[k]} {k}" for k in STATUS_ORDER)
    options = "".join(f'<option value="{k}">{k} ({counts[k]})</option>' for k in STATUS_ORDER)
    decisions = "".join(
        f'<option value="{k}">{t}</option>'
        for k, t in (
            ("", "all decisions"),
            ("undecided", "undecided"),
            ("decided", "decided"),
            ("accept", "accepted"),
            ("correct", "corrected"),
            ("reject", "rejected"),
        )
    )
    cards = "\n".join(
        _card(d, i, img, link) for i, (d, (img, link)) in enumerate(zip(rows, images, strict=True))
    )
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>:root{{--thumb-h:{THUMB_HEIGHT_PX}px}}{_static('review.css')}"
        f"</style></head><body><header><h1>{e(title)}</h1>"
        f'<p id="count"><b>{len(rows)} scans</b>: {e(summary)}. '
        f'Showing <span id="shown">{len(rows)}</span>. <b id="decided"></b><span id="msg"></span></p>'
        '<input id="q" type="search" placeholder="filter: path, status, warning, error"> '
        f'<select id="status"><option value="">all statuses</option>{options}</select> '
        f'<select id="decision">{decisions}</select> level <select id="level"></select> '
        'reviewer <input id="reviewer" placeholder="initials"> '
        '<button id="download" type="button">download corrections.csv</button> '
        '<label>import <input id="import" type="file" accept=".csv,text/csv"></label>'
        f'<p id="help">{_HELP}</p></header>'
        f"<main>\n{cards}\n</main>"
        f'<script id="l3data" type="application/json">{blob}</script>'
        f"<script>{_static('review.js')}</script></body></html>\n"
    )


def write_report(
    results: str | os.PathLike[str],
    html_path: str | os.PathLike[str],
    embed: bool = True,
    title: str | None = None,
) -> ReportInfo:
    """Write the review page of the results file ``results`` to ``html_path`` (atomically).

    Raises:
        InputError: the results file cannot be read.
        UsageError: ``html_path`` cannot be written.
    """
    src, dst = Path(results), Path(html_path)
    if dst.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"the report must be an .html file, not {dst.name!r}")
    if not dst.parent.is_dir():
        raise UsageError(f"the folder of {dst} does not exist")
    rows = sorted(latest(read_results(src)), key=sort_key)
    thumbs_dir = dst.with_name(dst.stem + "_thumbs")
    if not embed and thumbs_dir.is_dir():
        for old in thumbs_dir.glob("[0-9][0-9][0-9][0-9][0-9][0-9].jpg"):  # an earlier report's
            old.unlink()
    images: list[tuple[str | None, str | None]] = []
    geometries: list[dict[str, Any] | None] = []
    for i, d in enumerate(rows):
        png = qa_file(d, src.parent)
        jpeg = _thumbnail(png, THUMB_HEIGHT_PX) if png is not None else None
        geo = read_geometry(png) if png is not None and jpeg is not None else None
        strip = geo["ax"]["t"] if geo is not None and geo["ax"] and "t" in geo["ax"] else None
        if strip is not None:  # thumbnails stay beside the QA picture, linked from the page
            strip["f"] = Path(os.path.relpath(strip["f"], dst.parent.resolve())).as_posix()
        geometries.append(geo)
        if png is None or jpeg is None:
            images.append((None, None))
            continue
        link = Path(os.path.relpath(png.resolve(), dst.parent.resolve())).as_posix()
        if embed:
            images.append(("data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"), link))
        else:
            thumbs_dir.mkdir(exist_ok=True)
            name = f"{i:06d}.jpg"
            (thumbs_dir / name).write_bytes(jpeg)
            images.append((f"{thumbs_dir.name}/{name}", link))
    data = page_data(rows, geometries, results_key(src.name, rows))
    page = render(rows, images, title or f"l3edge review: {src.name}", data)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {dst}: {exc.strerror or exc}") from exc
    counts = {k: sum(status(d) == k for d in rows) for k in STATUS_ORDER}
    pictures = sum(img is not None for img, _ in images)
    return ReportInfo(dst, len(rows), counts, pictures, len(rows) - pictures)
