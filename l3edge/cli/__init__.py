"""Command line: parses arguments, calls the API, maps errors to exit codes. Nothing else.

One module per command (predict, report, export, info, phantom and demo, serve); ``common`` holds what they
share.
Exit codes: 0 every scan processed (L3 found or reported absent); 2 usage error; 3 at least one scan could
not be read (the others are still processed and written); 4 the model is missing or invalid; 130 interrupted
(Ctrl-C; the rows written so far stay, ``--resume`` continues).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Annotated, NoReturn

import typer

from l3edge import __version__
from l3edge.cli import export, info, phantom, predict, report, serve
from l3edge.cli.common import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_INPUT", "EXIT_MODEL", "EXIT_OK", "EXIT_USAGE", "app", "main"]

app = typer.Typer(
    name="l3edge",
    help="Find the L3 vertebra slice in CT scans (DICOM folders or NIfTI files) on a CPU.",
    pretty_exceptions_show_locals=False,  # rich locals would print DICOM datasets, i.e. patient data
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
)
app.command()(predict.predict)
app.command()(report.report)
app.command()(export.export)
app.command()(info.info)
app.command()(phantom.phantom)
app.command()(phantom.demo)
app.command()(serve.serve)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"l3edge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Find the L3 vertebra slice in CT scans on a CPU."""


def main() -> NoReturn:
    """Console entry point. Ends the process (see :func:`_exit`): code that needs to run after it registers
    an atexit handler."""
    try:
        app(prog_name="l3edge")
    except SystemExit as exc:  # click ends every command so, 0 included
        _exit(exc.code)
    _exit(0)


def _exit(code: object) -> NoReturn:
    """End the process once the command is done, without Python's teardown of what it loaded.

    That teardown has nothing left to write (results, --out rows, QA pictures and exports are closed by now),
    yet it takes a one-scan ``l3edge predict`` 50-100 ms: OpenVINO destroys each compiled model (10-40 ms
    apiece) and the interpreter frees every module. The exit code, the atexit handlers (logging, temporary
    folders, multiprocessing) and the flushed output stay as with ``sys.exit``. While another thread or a
    child process still runs, or for a non-integer code, the usual exit is taken (it waits for them)."""
    others = any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate())
    mp = sys.modules.get("multiprocessing")
    if others or (mp is not None and mp.active_children()) or not isinstance(code, int | None):
        raise SystemExit(code)
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a closed pipe, say: the usual exit reports it as it always does
        raise SystemExit(code) from None
    os._exit(code or 0)
