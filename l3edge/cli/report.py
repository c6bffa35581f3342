"""``l3edge report``: the review page (one HTML file) of a results file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from l3edge.cli.common import VerboseOpt, fail, setup_logging
from l3edge.errors import InputError, UsageError


def report(
    results: Annotated[Path, typer.Argument(help="Results of l3edge predict --out (.jsonl or .csv).")],
    html_path: Annotated[Path, typer.Option("--html", help="The page to write (.html).")] = Path(
        "report.html"
    ),
    embed: Annotated[
        bool,
        typer.Option(
            help="Embed the thumbnails in the page (one file); --no-embed writes them to <name>_thumbs/ "
            "beside it (a lighter page for large cohorts)."
        ),
    ] = True,
    title: Annotated[str | None, typer.Option(help="Page title (default: from the results file).")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write a review page: a thumbnail of each scan's QA picture (predict --qa DIR) with its result; scans
    to review, errors and not-found first. It opens from disk, with no server and no network."""
    setup_logging(verbose)
    from l3edge.report import write_report

    try:
        info = write_report(results, html_path, embed=embed, title=title)
    except InputError as exc:
        raise fail(results, exc) from None
    except UsageError as exc:
        raise fail(html_path, exc) from None
    c = info.counts
    errors = f"{c['error']} error" + ("s" if c["error"] != 1 else "")
    typer.echo(
        f"wrote {info.path}: {info.rows} scans ({c['review']} review, {errors}, "
        f"{c['not found']} not found, {c['found']} found), {info.pictures} thumbnails"
        + (f", {info.missing_pictures} without a QA picture" if info.missing_pictures else "")
    )
