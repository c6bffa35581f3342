"""Append results to a CSV or JSONL file, one complete line at a time: a killed run never leaves half a line.

Each line is written with a single ``os.write`` on an ``O_APPEND`` descriptor, then fsync'ed. A trailing
partial line (from a crash mid-write on an unusual file system) is cut off when the file is opened again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from l3edge.errors import UsageError
from l3edge.result import L3Result

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "path",
    "level",
    "found",
    "z_mm",
    "slice_index",
    "slice_z_mm",
    "instance_number",
    "sop_instance_uid",
    "series_instance_uid",
    "n_slices",
    "confidence",
    "presence",
    "ramp_r",
    "review",
    "model_name",
    "model_version",
    "total_ms",
    "warnings",
    "error",
    "qa_path",
    "series_choice",
    "export_path",
)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def json_line(result: L3Result) -> str:
    """One JSON object, no newline."""
    return json.dumps(result.to_dict(), allow_nan=False, separators=(", ", ": "))


def csv_row(result: L3Result) -> dict[str, Any]:
    d = result.to_dict()
    row = {k: d.get(k) for k in CSV_COLUMNS}
    row["model_name"] = result.model.get("name", "")
    row["model_version"] = result.model.get("version", "")
    row["total_ms"] = result.timings_ms.get("total", "")
    row["warnings"] = "; ".join(result.warnings)
    # One physical line per row, so a reader can split on newlines (e.g. --resume after a crash).
    return {
        k: ("" if v is None else str(v).replace("\n", " ") if isinstance(v, str) else v)
        for k, v in row.items()
    }


def _csv_text(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class ResultWriter:
    """Appends results to ``path`` (``.csv`` or ``.jsonl``). Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise UsageError(f"--out must end in .csv or .jsonl, not {self.path.name!r}")
        if not self.path.parent.is_dir():
            raise UsageError(f"the folder of --out {self.path} does not exist")
        self.format = fmt
        self._fd: int | None = None

    def _existing_lines(self) -> list[str]:
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        return [ln for ln in lines[:-1] if ln.strip()]  # the part after the last newline is incomplete

    def done_paths(self) -> set[str]:
        """Absolute paths with a successful (error-free) row already in the file; used by --resume."""
        done: set[str] = set()
        lines = self._existing_lines()
        if self.format == "jsonl":
            for ln in lines:
                try:
                    d = json.loads(ln)
                except ValueError:
                    continue
                if isinstance(d, dict) and d.get("path") and not d.get("error"):
                    done.add(os.path.abspath(str(d["path"])))
        elif lines:
            for row in csv.DictReader(io.StringIO("\n".join(lines) + "\n")):
                if row.get("path") and not row.get("error"):
                    done.add(os.path.abspath(row["path"]))
        return done

    def open(self) -> ResultWriter:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            self._cut_partial_line()
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write --out {self.path}: {exc.strerror}") from exc
        if self.format == "csv":
            size = os.fstat(self._fd).st_size
            if size == 0:
                self._append(_csv_text(list(CSV_COLUMNS)))
            else:
                try:
                    self.check()
                except UsageError:
                    self.close()
                    raise
        return self

    def check(self) -> None:
        """Refuse an existing CSV file whose columns are not this version's (before anything runs).

        Raises:
            UsageError: the file has other columns.
        """
        if self.format != "csv" or not self.path.is_file() or self.path.stat().st_size == 0:
            return
        lines = self._existing_lines()
        if not lines:  # nothing complete yet (open() cuts a partial line and writes the header)
            return
        if tuple(next(csv.reader([lines[0]]))) != CSV_COLUMNS:
            raise UsageError(f"{self.path} exists with other columns; choose another --out file")

    def _cut_partial_line(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: removing an incomplete last line left by an interrupted run", self.path)
            with self.path.open("r+b") as f:
                f.truncate(keep)

    def _append(self, text: str) -> None:
        assert self._fd is not None, "ResultWriter used before open()"
        data = text.encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # only on exotic file systems; regular files take the line at once
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def _line(self, result: L3Result) -> str:
        if self.format == "jsonl":
            return json_line(result) + "\n"
        row = csv_row(result)
        return _csv_text([row[k] for k in CSV_COLUMNS])

    def write(self, result: L3Result) -> None:
        """Append one result as one complete line."""
        self._append(self._line(result))

    def write_many(self, results: Iterable[L3Result]) -> None:
        """Append the rows of one scan in a single write, so that a crash keeps all of them or none."""
        text = "".join(self._line(r) for r in results)
        if text:
            self._append(text)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
