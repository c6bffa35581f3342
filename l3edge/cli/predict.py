"""``l3edge predict``: locate L3 in each scan, one result line per scan."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from l3edge.cli.common import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    Mode,
    ModelOpt,
    Precision,
    VerboseOpt,
    error,
    fail,
    human,
    log,
    setup_logging,
)
from l3edge.errors import L3EdgeError, ModelError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from l3edge.locator import L3Locator
    from l3edge.scan import Scan


def _load_while_reading(
    load: Callable[[], L3Locator], first: Path | None, series: str | None, threads: int | None
) -> tuple[L3Locator, Scan | Exception | None]:
    """Load the model in a background thread while the main thread reads the first scan.

    OpenVINO releases the GIL while it compiles, so a one-scan run costs about max(load, read) instead of
    their sum. Returns (locator, the first scan opened with its preferred series read, or the error opening
    it raised, which the scan loop re-raises so that it is reported like any other scan's error).

    Raises:
        ModelError, UsageError: from ``load``.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="l3edge-load") as pool:
        future = pool.submit(load)
        prefetched: Scan | Exception | None = None
        if first is not None:
            from l3edge.scan import open_scan

            try:
                prefetched = open_scan(first, None if series == "all" else series, threads).prefetch()
            except Exception as exc:  # noqa: BLE001 - re-raised in the scan loop
                prefetched = exc
        return future.result(), prefetched


def predict(
    paths: Annotated[list[Path], typer.Argument(help="DICOM folders or NIfTI files, one scan each.")],
    model: ModelOpt = None,
    stride: Annotated[int | None, typer.Option(min=1, help="Window stride in model pixels.")] = None,
    series: Annotated[
        str | None,
        typer.Option(
            help="SeriesInstanceUID to use in a multi-series study, or 'all' for one result per candidate "
            "series (default: the one that shows L3 best)."
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
    device: Annotated[str, typer.Option(help="OpenVINO device.")] = "CPU",
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for decoding and inference (default: every CPU).")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Copy each scan's L3 slice (its DICOM file, or a 2D NIfTI) and a PNG into DIR/<scan name>/."
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Locate L3 in each scan: one result line per scan."""
    setup_logging(verbose)
    from l3edge.output import ResultWriter, json_line
    from l3edge.result import L3Result

    if resume and out is None:
        error("--resume", "needs --out FILE to know which scans are done")
        raise typer.Exit(EXIT_USAGE)
    try:
        writer = ResultWriter(out) if out is not None else None
    except UsageError as exc:
        raise fail(out, exc) from None
    done: set[str] = set()
    if writer is not None and resume:
        try:
            done = writer.done_paths()
        except UsageError as exc:
            raise fail(out, exc) from None
    if export is not None:
        try:
            export.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error(export, f"cannot create the --export folder ({exc.strerror})")
            raise typer.Exit(EXIT_USAGE) from None
    first = next((p for p in paths if os.path.abspath(p) not in done), None)

    def load() -> L3Locator:
        from l3edge.locator import L3Locator  # imports OpenVINO: in the loader thread, beside the reading

        return L3Locator.load(
            model,
            device=device,
            threads=threads,
            stride=stride,
            mode=mode.value,
            inference_precision=precision.value if precision else None,
            refine=refine,
        )

    try:
        locator, prefetched = _load_while_reading(load, first, series, threads)
    except ModelError as exc:
        from l3edge.runtime import resolve_model

        where: object = model if model is not None else "model"
        with contextlib.suppress(ModelError):
            where = resolve_model(model).path
        raise fail(where, exc) from None
    except UsageError as exc:
        raise fail("arguments", exc) from None
    if writer is not None:
        try:
            writer.open()
        except UsageError as exc:
            raise fail(out, exc) from None
    progress = len(paths) > 1 and not as_json and not quiet
    model_info = {"name": locator.metadata.name, "version": locator.metadata.version}
    code = EXIT_OK
    try:
        for i, path in enumerate(paths, 1):
            if os.path.abspath(path) in done:
                log.info("%s: already in %s, skipped (--resume)", path, out)
                continue
            if progress:
                typer.echo(f"[{i}/{len(paths)}] {path}", err=True)
            reported = False  # the scan's error line is already out
            try:
                scan: Path | Scan = path
                if path is first and prefetched is not None:
                    opened, prefetched = prefetched, None
                    if isinstance(opened, BaseException):
                        raise opened
                    scan = opened
                if series == "all":
                    results = locator.predict_all(
                        scan, qa_dir=qa, export_dir=export, export_neighbours=export_neighbours
                    )
                else:
                    results = [
                        locator.predict(
                            scan, series, qa_dir=qa, export_dir=export, export_neighbours=export_neighbours
                        )
                    ]
            except L3EdgeError as exc:
                error(path, exc)
                results = [L3Result.failure(str(path), " ".join(str(exc).split()), model_info)]
                code, reported = max(code, exc.exit_code), True
            except Exception as exc:  # noqa: BLE001 - one bad scan must not stop a batch
                message = f"{type(exc).__name__}: {exc}"
                error(path, message)
                if verbose:
                    traceback.print_exc(file=sys.stderr)
                results = [L3Result.failure(str(path), " ".join(message.split()), model_info)]
                code, reported = max(code, EXIT_INPUT), True
            for result in results:
                if result.error is not None and not reported:  # one candidate of --series all
                    error(path, f"series {result.series_instance_uid}: {result.error}")
                    code = max(code, EXIT_INPUT)
                if as_json:
                    typer.echo(json_line(result))
                elif result.error is None:
                    typer.echo(human(result))
                if writer is not None:
                    writer.write(result)
    finally:
        if writer is not None:
            writer.close()
    raise typer.Exit(code)
