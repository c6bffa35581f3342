"""``l3edge export``: the accepted and corrected slices of a reviewed cohort (from corrections.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from l3edge.cli.common import VerboseOpt, fail, setup_logging
from l3edge.errors import InputError, UsageError


def export(
    results: Annotated[Path, typer.Argument(help="Results of l3edge predict --out (.jsonl or .csv).")],
    corrections: Annotated[
        Path, typer.Option("--corrections", help="corrections.csv downloaded from the review page.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Export folder (one folder per scan, as predict --export).")
    ],
    neighbours: Annotated[
        int, typer.Option("--neighbours", min=0, help="Also export this many slices on each side.")
    ] = 0,
    verbose: VerboseOpt = False,
) -> None:
    """Hand on the reviewed slices: each accepted or corrected scan's slice (DICOM byte for byte, or a 2D
    NIfTI, and a PNG) as predict --export writes them; rejected scans are skipped. Every row is checked
    before anything is written. Exit 3: a row does not fit the results or its scan; 2: the folder cannot be
    written."""
    setup_logging(verbose)
    from l3edge.corrections import export_corrections

    try:
        info = export_corrections(results, corrections, out, neighbours)
    except InputError as exc:
        raise fail(corrections, exc) from None
    except UsageError as exc:
        raise fail(out, exc) from None
    for note in info.notes:
        typer.echo(f"l3edge: note: {note}", err=True)
    typer.echo(
        f"exported {info.exported} slices to {out} ({info.accepted} accepted, {info.corrected} corrected); "
        f"{info.rejected} rejected and {info.undecided} undecided scans skipped; list in {info.manifest}"
    )
