"""``l3edge predict``: locate L3 in each scan, one result line per scan (a thin layer on ``l3edge.batch``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from l3edge.cli.common import (
    EXIT_USAGE,
    Mode,
    ModelOpt,
    Precision,
    VerboseOpt,
    error,
    error_line,
    fail,
    human,
    setup_logging,
)
from l3edge.errors import ModelError, UsageError

EXIT_INTERRUPTED = 130


def predict(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="DICOM folders or NIfTI files, one scan each; glob patterns are expanded."),
    ] = None,
    model: ModelOpt = None,
    stride: Annotated[int | None, typer.Option(min=1, help="Window stride in model pixels.")] = None,
    series: Annotated[
        str | None,
        typer.Option(
            help="SeriesInstanceUID to use in a multi-series study, or 'all' for one result per candidate "
            "series (default: the series that shows the level best, by content)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per scan on stdout.")] = False,
    out: Annotated[Path | None, typer.Option(help="Append results to this .csv or .jsonl file.")] = None,
    qa: Annotated[
        Path | None, typer.Option(help="Write one QA picture (PNG) per scan into this folder.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Skip scans that already have an error-free row in --out.")
    ] = False,
    from_list: Annotated[
        Path | None,
        typer.Option(
            "--from-list",
            help="Also run the scans listed in this file: one path per line, or a .csv with a 'path' "
            "column (relative paths are relative to the file).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes, one model each (default: the number of cores, at most the number of "
            "scans); 1 runs in this process.",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            envvar="L3EDGE_DASK",
            help="Run on the Dask cluster at this scheduler address (needs l3edge's dask extra); the paths "
            "must be readable by its workers.",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.001, help="Seconds per scan; a scan taking longer is reported as an error."),
    ] = None,
    device: Annotated[str, typer.Option(help="OpenVINO device.")] = "CPU",
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, help="CPU threads for decoding and inference, per worker (default: the cores shared out)."
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Copy each scan's slice (its DICOM file, or a 2D NIfTI) and a PNG into DIR/<scan name>/."
        ),
    ] = None,
    export_neighbours: Annotated[
        int, typer.Option(min=0, help="With --export: also this many slices on each side.")
    ] = 0,
    mode: Annotated[
        Mode, typer.Option(help="strip: whole MIP at once; window: window by window.")
    ] = Mode.auto,
    precision: Annotated[
        Precision | None,
        typer.Option(help="Inference precision (default: OpenVINO's choice for the device)."),
    ] = None,
    refine: Annotated[
        bool, typer.Option(help="Use the model's refiner, when it has one, to place L3 more finely.")
    ] = True,
    cache: Annotated[
        bool,
        typer.Option(
            help="Keep compiled models in the cache folder ($L3EDGE_CACHE_DIR, default ~/.cache/l3edge) so "
            "that the next run starts faster."
        ),
    ] = True,
    level: Annotated[
        str | None,
        typer.Option(help="Vertebral level the result describes (default: the model's, L3): T12, L1, S1..."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, lines or summary.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Locate L3 in each scan: one result line per scan."""
    setup_logging(verbose)
    from l3edge import batch
    from l3edge.cli.progress import Progress, choose_mode
    from l3edge.output import ResultWriter, json_line
    from l3edge.runtime import load_metadata, resolve_model

    if resume and out is None:
        error("--resume", "needs --out FILE to know which scans are done")
        raise typer.Exit(EXIT_USAGE)
    if dask is not None and not dask.strip():
        dask = None  # an empty L3EDGE_DASK means no cluster
    if dask is not None and workers is not None:
        error("--workers", "is for local processes; with --dask the cluster's workers run the scans")
        raise typer.Exit(EXIT_USAGE)
    try:
        scans = batch.collect_paths(paths or [], from_list)
    except UsageError as exc:
        raise fail(from_list, exc) from None
    if not scans:
        error("predict", "no scans given: pass folders, files or glob patterns, or --from-list FILE")
        raise typer.Exit(EXIT_USAGE)
    if out is not None:
        try:
            ResultWriter(out).check()
        except UsageError as exc:
            raise fail(out, exc) from None
    load: dict[str, Any] = dict(
        model=model,
        device=device,
        threads=threads,
        stride=stride,
        mode=mode.value,
        inference_precision=precision.value if precision else None,
        refine=refine,
    )
    if not cache:
        load["cache_dir"] = False
    if export is not None:
        try:
            export.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error(export, f"cannot create the --export folder ({exc.strerror})")
            raise typer.Exit(EXIT_USAGE) from None
    options: dict[str, Any] = {
        "series_uid": series,
        "qa_dir": os.path.abspath(qa) if qa else None,
        "export_dir": os.path.abspath(export) if export else None,
        "export_neighbours": export_neighbours or None,
    }
    where: object = model if model is not None else "model"
    try:
        where = resolve_model(model).path
        if level is not None:  # a level the model does not place is a usage error, before any scan
            known = load_metadata(where).model_levels
            if level.upper() not in known:
                raise UsageError(f"--level: this model places {', '.join(known)}, not {level!r}")
            options["level"] = level.upper()
        options = {k: v for k, v in options.items() if v is not None}
        run = batch.run(
            scans,
            load=load,
            options=options,
            workers=workers,
            dask=dask,
            timeout=timeout,
            out=out,
            resume=resume,
        )
    except ModelError as exc:
        raise fail(where, exc) from None
    except UsageError as exc:
        raise fail("arguments", exc) from None
    progress = Progress(run.summary, choose_mode(len(run.paths), quiet, as_json))
    try:
        with run, progress:
            for outcome in run.scans():
                for result in outcome.results:
                    if result.error is not None:
                        progress.echo(error_line(result.path, result.error), err=True)
                    elif not as_json:
                        progress.echo(human(result))
                    if as_json:
                        progress.echo(json_line(result))
                if verbose and outcome.traceback:
                    progress.echo(outcome.traceback.rstrip("\n"), err=True)
                progress.advance(outcome)
    except KeyboardInterrupt:
        done = f"{run.summary.scans} scans written to {out}; --resume continues" if out else "stopped"
        typer.echo(f"l3edge: interrupted: {done}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    progress.print_summary()
    raise typer.Exit(run.exit_code)
