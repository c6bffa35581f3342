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


# The options of `l3edge predict`; a new per-scan option is one of these and a field of
# l3edge.options.PredictOptions (given to it in `predict` below).
PathsOpt = Annotated[
    list[Path] | None,
    typer.Argument(help="DICOM folders or NIfTI files, one scan each; glob patterns are expanded."),
]
StrideOpt = Annotated[int | None, typer.Option(min=1, help="Window stride in model pixels.")]
SeriesOpt = Annotated[
    str | None,
    typer.Option(
        help="SeriesInstanceUID to use in a multi-series study, or 'all' for one result per candidate "
        "series (default: the series that shows the level best, by content)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per scan on stdout.")]
OutOpt = Annotated[Path | None, typer.Option(help="Append results to this .csv or .jsonl file.")]
QaOpt = Annotated[Path | None, typer.Option(help="Write one QA picture (PNG) per scan into this folder.")]
QaAxialOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="With --qa: also axial thumbnails at every level found and N steps (>= 2.5 mm) each side, for "
        "the review page's axial view (0: none).",
    ),
]
ResumeOpt = Annotated[bool, typer.Option(help="Skip scans that already have an error-free row in --out.")]
FromListOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-list",
        help="Also run the scans listed in this file: one path per line, or a .csv with a 'path' "
        "column (relative paths are relative to the file).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Worker processes, one model each (default: the number of cores, at most the number of "
        "scans); 1 runs in this process.",
    ),
]
DaskOpt = Annotated[
    str | None,
    typer.Option(
        envvar="L3EDGE_DASK",
        help="Run on the Dask cluster at this scheduler address (needs l3edge's dask extra); the paths "
        "must be readable by its workers.",
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(min=0.001, help="Seconds per scan; a scan taking longer is reported as an error."),
]
DeviceOpt = Annotated[str, typer.Option(help="OpenVINO device.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="CPU threads for decoding and inference, per worker (default: the cores shared out)."
    ),
]
ExportOpt = Annotated[
    Path | None,
    typer.Option(
        help="Copy each scan's slice (its DICOM file, or a 2D NIfTI) and a PNG into DIR/<scan name>/."
    ),
]
ExportNeighboursOpt = Annotated[
    int, typer.Option(min=0, help="With --export: also this many slices on each side.")
]
ModeOpt = Annotated[Mode, typer.Option(help="strip: whole MIP at once; window: window by window.")]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(help="Inference precision (default: OpenVINO's choice for the device)."),
]
RefineOpt = Annotated[
    bool, typer.Option(help="Use the model's refiner, when it has one, to place L3 more finely.")
]
CacheOpt = Annotated[
    bool,
    typer.Option(
        help="Keep compiled models in the cache folder ($L3EDGE_CACHE_DIR, default ~/.cache/l3edge) so "
        "that the next run starts faster."
    ),
]
LevelOpt = Annotated[
    str | None,
    typer.Option(help="Vertebral level the result describes (default: the model's, L3): T12, L1, S1..."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, lines or summary.")]


def predict(
    paths: PathsOpt = None,
    model: ModelOpt = None,
    stride: StrideOpt = None,
    series: SeriesOpt = None,
    as_json: JsonOpt = False,
    out: OutOpt = None,
    qa: QaOpt = None,
    qa_axial: QaAxialOpt = 0,
    resume: ResumeOpt = False,
    from_list: FromListOpt = None,
    workers: WorkersOpt = None,
    dask: DaskOpt = None,
    timeout: TimeoutOpt = None,
    device: DeviceOpt = "CPU",
    threads: ThreadsOpt = None,
    export: ExportOpt = None,
    export_neighbours: ExportNeighboursOpt = 0,
    mode: ModeOpt = Mode.auto,
    precision: PrecisionOpt = None,
    refine: RefineOpt = True,
    cache: CacheOpt = True,
    level: LevelOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Locate L3 in each scan: one result line per scan."""
    setup_logging(verbose)
    from l3edge import batch
    from l3edge.options import PredictOptions

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
    try:
        scans = batch.collect_paths(paths or [], from_list)
    except UsageError as exc:
        raise fail(from_list, exc) from None
    if not scans:
        error("predict", "no scans given: pass folders, files or glob patterns, or --from-list FILE")
        raise typer.Exit(EXIT_USAGE)
    try:
        options = PredictOptions(
            series_uid=None if series == "all" else series,
            all_series=series == "all",
            qa_dir=os.path.abspath(qa) if qa else None,  # absolute: workers elsewhere write there too
            qa_axial=qa_axial,
            level=level,
            export_dir=os.path.abspath(export) if export else None,
            export_neighbours=export_neighbours,
        )
        run = batch.run(
            scans,
            load=load,
            options=options,
            workers=workers,
            dask=dask.strip() or None if dask is not None else None,  # an empty L3EDGE_DASK: no cluster
            timeout=timeout,
            out=out,
            resume=resume,
        )
    except ModelError as exc:
        raise fail(_model_named(model), exc) from None
    except UsageError as exc:
        raise fail("arguments", exc) from None
    _show(run, as_json, quiet, verbose, out)


def _model_named(model: Path | None) -> object:
    """What a model error names: the model file found, else the one asked for."""
    from l3edge.runtime import resolve_model

    try:
        return resolve_model(model).path
    except ModelError:
        return model if model is not None else "model"


def _show(run: Any, as_json: bool, quiet: bool, verbose: bool, out: Path | None) -> None:
    """Stream the batch's results to the terminal (lines or JSON, progress, summary); exit with its code."""
    from l3edge.cli.progress import Progress, choose_mode
    from l3edge.output import json_line

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
