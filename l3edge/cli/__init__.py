"""Command line: parses arguments, calls the API, maps errors to exit codes. Nothing else.

One module per command (predict, report, export, info, phantom and demo, serve); ``common`` holds what they
share.
Exit codes: 0 every scan processed (L3 found or reported absent); 2 usage error; 3 at least one scan could
not be read (the others are still processed and written); 4 the model is missing or invalid; 130 interrupted
(Ctrl-C; the rows written so far stay, ``--resume`` continues).
"""

from __future__ import annotations

from typing import Annotated

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


def main() -> None:
    """Console entry point."""
    app(prog_name="l3edge")
