"""The scans of a cohort: paths given one by one, glob patterns, and list files.

A list file (``--from-list``) is a CSV with a ``path`` column when its name ends in ``.csv``, otherwise one
path per line (blank lines and lines starting with ``#`` are skipped). Relative paths in a list are relative
to the list's own folder (as in the scan CSVs of ``tools/build_cache``), so a list travels with its data.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Iterable
from pathlib import Path

from l3edge.errors import UsageError

_MAGIC = frozenset("*?[")


def has_magic(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a glob pattern (``*``, ``?`` or ``[``)."""
    return any(c in _MAGIC for c in str(path))


def expand(pattern: str) -> list[str]:
    """The paths matching a glob pattern (``**`` spans folders), sorted; the pattern itself when it names an
    existing path or matches nothing (then the scan is reported as an error row that says so)."""
    if not has_magic(pattern) or os.path.exists(pattern):
        return [pattern]
    return sorted(glob.glob(pattern, recursive=True)) or [pattern]


def read_list(path: str | os.PathLike[str]) -> list[str]:
    """The paths listed in ``path`` (see the module docstring).

    Raises:
        UsageError: the file cannot be read, or a CSV without a ``path`` column.
    """
    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{where}: cannot read the list of scans: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: the list of scans is not UTF-8 text") from exc
    if where.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        columns = [c.strip() for c in reader.fieldnames or []]
        if "path" not in columns:
            raise UsageError(f"{where}: a CSV list needs a 'path' column (it has {columns})")
        reader.fieldnames = columns
        items = [(row.get("path") or "").strip() for row in reader]
    else:
        items = [ln.strip() for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    base = where.parent
    return [p if os.path.isabs(p) else str(base / p) for p in items if p]


def collect_paths(
    paths: Iterable[str | os.PathLike[str]] = (), from_list: str | os.PathLike[str] | None = None
) -> list[str]:
    """The scans of a cohort: the list file's entries, then ``paths``, glob patterns expanded; each scan once
    (the first spelling of an absolute path is kept).

    Raises:
        UsageError: an unreadable list file.
    """
    raw = read_list(from_list) if from_list is not None else []
    raw += [str(p) for p in paths]
    out: list[str] = []
    seen: set[str] = set()
    for item in raw:
        for p in expand(item):
            key = os.path.abspath(p)
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out
