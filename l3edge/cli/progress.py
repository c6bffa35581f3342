"""Progress of many scans on stderr: a bar on a terminal (rich), plain lines otherwise; a closing summary."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import typer

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from l3edge.batch import ScanOutcome, Summary

Mode = Literal["bar", "lines", "off"]


def choose_mode(n_scans: int, quiet: bool, as_json: bool) -> Mode:
    """A bar when stderr is a terminal; plain lines when it is not (unless stdout is JSON for a machine);
    nothing for a single scan or with ``-q``."""
    if quiet or n_scans <= 1:
        return "off"
    if sys.stderr.isatty():
        return "bar"
    return "off" if as_json else "lines"


def _eta(summary: Summary) -> str:
    left = summary.total - summary.scans
    if summary.scans == 0 or left <= 0:
        return "-" if left > 0 else "0:00:00"
    return str(timedelta(seconds=round(left * summary.wall_s / summary.scans)))


def _errors(n: int) -> str:
    return f"{n} error{'s' if n != 1 else ''}"


class Progress:
    """Shows a batch's progress; use as a context manager around the loop over its outcomes."""

    def __init__(self, summary: Summary, mode: Mode) -> None:
        self.summary = summary
        self.mode: Mode = mode
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("l3edge"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} scans/min"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[errors]}"),
                console=Console(stderr=True),
                redirect_stdout=False,  # lines go through echo(), which puts them above the bar
                redirect_stderr=False,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("scans", total=self.summary.total, rate=0.0, errors=_errors(0))
        return self

    def echo(self, text: str, err: bool = False) -> None:
        """Print a line (stdout, or stderr with ``err``) without breaking the bar: while the bar is live, a
        line meant for the terminal is printed above it; a piped stdout keeps its lines."""
        if self._bar is not None and (err or sys.stdout.isatty()):
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True, end="\n")
        else:
            typer.echo(text, err=err)

    def advance(self, outcome: ScanOutcome) -> None:
        """Call after ``summary.add(outcome)``."""
        s = self.summary
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=s.scans, rate=s.scans_per_min, errors=_errors(s.errors))
        elif self.mode == "lines":
            status = (
                "error"
                if not outcome.ok
                else ", ".join("found" if r.found else "not found" for r in outcome.results)
            )
            self.echo(
                f"[{s.scans}/{s.total}] {outcome.path}: {status}; {s.scans_per_min:.1f} scans/min, "
                f"ETA {_eta(s)}, {_errors(s.errors)}",
                err=True,
            )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def print_summary(self) -> None:
        """The closing summary line (when progress is shown)."""
        if self.mode == "off":
            return
        typer.echo("l3edge: " + summary_line(self.summary), err=True)


def summary_line(s: Summary) -> str:
    """``12 scans in 30.1 s (23.9 scans/min): 10 found, 1 not found, 2 review, 1 error; 3 skipped``."""
    text = (
        f"{s.scans} scan{'s' if s.scans != 1 else ''} in {s.wall_s:.1f} s ({s.scans_per_min:.1f} scans/min): "
        f"{s.found} found, {s.not_found} not found, {s.review} review, {_errors(s.errors)}"
    )
    if s.rows != s.scans:
        text += f" ({s.rows} rows)"
    if s.skipped:
        text += f"; {s.skipped} skipped (already in --out)"
    return text
