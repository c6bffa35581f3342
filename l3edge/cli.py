"""Command line: parses arguments, calls the API, maps errors to exit codes. Nothing else.

Exit codes: 0 every scan processed (L3 found or reported absent); 2 usage error; 3 at least one scan could
not be read (the others are still processed and written); 4 the model is missing or invalid.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from l3edge import __version__
from l3edge.errors import L3EdgeError, ModelError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from l3edge.locator import L3Locator
    from l3edge.phantom import Truth
    from l3edge.series import Projection

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL = 0, 2, 3, 4

app = typer.Typer(
    name="l3edge",
    help="Find the L3 vertebra slice in CT scans (DICOM folders or NIfTI files) on a CPU.",
    pretty_exceptions_show_locals=False,  # rich locals would print DICOM datasets, i.e. patient data
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
)
log = logging.getLogger("l3edge")


class Mode(Enum):
    auto = "auto"
    strip = "strip"
    window = "window"


class Precision(str, Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"


class Fmt(str, Enum):
    dicom = "dicom"
    nifti = "nifti"


class Region(str, Enum):
    abdomen = "abdomen"
    cap = "cap"
    wholebody = "wholebody"
    chest = "chest"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if verbose else logging.WARNING,
        format="l3edge: %(levelname)s: %(message)s",
        force=True,
    )


def _error(where: object, message: object) -> None:
    """The one line a user error gets on stderr."""
    text = " ".join(str(message).split())  # one line, whatever the message
    prefix = f"{where}: "
    if text.startswith(prefix):  # readers already name the path
        text = text[len(prefix) :]
    typer.echo(f"l3edge: error: {where}: {text}", err=True)


def _fail(where: object, exc: L3EdgeError) -> typer.Exit:
    _error(where, exc)
    return typer.Exit(exc.exit_code)


def _human(r: Any) -> str:
    ms = r.timings_ms.get("total", 0.0)
    if r.found:
        inst = f" (instance {r.instance_number})" if r.instance_number is not None else ""
        return (
            f"{r.path}: L3 at z = {r.z_mm:.1f} mm, slice index {r.slice_index}{inst} of {r.n_slices}, "
            f"confidence {r.confidence:.2f}, {ms:.0f} ms"
        )
    return f"{r.path}: L3 not found in {r.n_slices} slices (presence {r.presence:.2f}), {ms:.0f} ms"


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details (INFO) to stderr.")]
ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="OpenVINO IR .xml (default: $L3EDGE_MODEL, then the bundled model)."),
]


def _load_while_reading(
    load: Callable[[], L3Locator], first: Path | None, series: str | None
) -> tuple[L3Locator, Projection | Exception | None]:
    """Load the model in a background thread while the main thread reads the first scan.

    OpenVINO releases the GIL while it compiles, so a one-scan run costs about max(load, read) instead of
    their sum. Returns (locator, the first scan's projection or the error reading it raised, which the scan
    loop re-raises so that it is reported like any other scan's error).

    Raises:
        ModelError, UsageError: from ``load``.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="l3edge-load") as pool:
        future = pool.submit(load)
        prefetched: Projection | Exception | None = None
        if first is not None:
            from l3edge.scan import read_projection

            try:
                prefetched = read_projection(first, series_uid=series)
            except Exception as exc:  # noqa: BLE001 - re-raised in the scan loop
                prefetched = exc
        return future.result(), prefetched


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="DICOM folders or NIfTI files, one scan each.")],
    model: ModelOpt = None,
    stride: Annotated[int | None, typer.Option(min=1, help="Window stride in model pixels.")] = None,
    series: Annotated[
        str | None, typer.Option(help="SeriesInstanceUID to use in a multi-series folder.")
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
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for inference.")] = None,
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
    _setup_logging(verbose)
    from l3edge.locator import L3Locator
    from l3edge.output import ResultWriter, json_line
    from l3edge.result import L3Result
    from l3edge.runtime import resolve_model

    if resume and out is None:
        _error("--resume", "needs --out FILE to know which scans are done")
        raise typer.Exit(EXIT_USAGE)
    try:
        writer = ResultWriter(out) if out is not None else None
    except UsageError as exc:
        raise _fail(out, exc) from None
    done: set[str] = set()
    if writer is not None and resume:
        try:
            done = writer.done_paths()
        except UsageError as exc:
            raise _fail(out, exc) from None
    first = next((p for p in paths if os.path.abspath(p) not in done), None)
    where: object = model if model is not None else "model"
    try:
        where = resolve_model(model).path
        locator, prefetched = _load_while_reading(
            lambda: L3Locator.load(
                model,
                device=device,
                threads=threads,
                stride=stride,
                mode=mode.value,
                inference_precision=precision.value if precision else None,
                refine=refine,
            ),
            first,
            series,
        )
    except ModelError as exc:
        raise _fail(where, exc) from None
    except UsageError as exc:
        raise _fail("arguments", exc) from None
    if writer is not None:
        try:
            writer.open()
        except UsageError as exc:
            raise _fail(out, exc) from None
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
            try:
                if path is first and prefetched is not None:
                    projection, prefetched = prefetched, None
                    if isinstance(projection, BaseException):
                        raise projection
                    result = locator.predict_projection(projection, qa_dir=qa, path=str(path))
                else:
                    result = locator.predict(path, series_uid=series, qa_dir=qa)
            except L3EdgeError as exc:
                _error(path, exc)
                result = L3Result.failure(str(path), " ".join(str(exc).split()), model_info)
                code = max(code, exc.exit_code)
            except Exception as exc:  # noqa: BLE001 - one bad scan must not stop a batch
                message = f"{type(exc).__name__}: {exc}"
                _error(path, message)
                if verbose:
                    traceback.print_exc(file=sys.stderr)
                result = L3Result.failure(str(path), " ".join(message.split()), model_info)
                code = max(code, EXIT_INPUT)
            if as_json:
                typer.echo(json_line(result))
            elif result.error is None:
                typer.echo(_human(result))
            if writer is not None:
                writer.write(result)
    finally:
        if writer is not None:
            writer.close()
    raise typer.Exit(code)


@app.command()
def info(
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Print the model's metadata and where it was found."""
    _setup_logging(verbose)
    from l3edge.runtime import load_metadata, resolve_model

    where: object = "model"
    try:
        location = resolve_model(model)
        where = location.path
        meta = load_metadata(location.path)
    except ModelError as exc:
        raise _fail(where, exc) from None
    if as_json:
        d = json.loads(meta.to_json())
        d["path"], d["found_via"] = str(location.path), location.source
        typer.echo(json.dumps(d))
        return
    s = meta.space
    windows = ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in s.intensity_windows)
    stride = (
        f"{meta.output_stride_px} px (strip mode)" if meta.output_stride_px else "none (window mode only)"
    )
    lines = [
        ("model", f"{location.path} (found via {location.source})"),
        ("name", meta.name),
        ("version", meta.version),
        ("level", meta.level),
        ("architecture", meta.architecture or "-"),
        ("precision", meta.precision),
        (
            "model space",
            f"{s.mm_per_px:g} mm/px, window {s.window_height_px} x {s.window_width_px} px "
            f"({s.window_height_mm:g} x {s.window_width_mm:g} mm), HU windows {windows}, "
            f"pad {s.pad_px} px, fill {s.fill_hu:g} HU",
        ),
        ("output stride", stride),
        ("default stride", f"{meta.default_stride_px} px"),
        ("threshold", f"{meta.presence_threshold:g}"),
        ("trained on", meta.trained_on or "-"),
        ("refiner", meta.refiner or "-"),
    ]
    if meta.is_refiner:
        lines.append(("refines", f"band {meta.refine_band}, window shifts {meta.refine_shifts_px} px"))
    for key, value in lines:
        typer.echo(f"{key + ':':<16}{value}")


def _truth_summary(truth: Truth) -> str:
    if truth.l3_in_view and truth.l3_z_mm is not None:
        return f"L3 in view at z = {truth.l3_z_mm:.1f} mm"
    return "L3 not in view"


def _scan_path(out_dir: Path, fmt: str) -> Path:
    """Where write_phantom put the scan: the folder (DICOM) or the NIfTI file in it."""
    return out_dir / "phantom.nii.gz" if fmt == "nifti" else out_dir


@app.command()
def phantom(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the phantom into.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    fmt: Annotated[Fmt, typer.Option("--format", help="File format.")] = Fmt.dicom,
    region: Annotated[Region, typer.Option(help="Body region covered by the scan.")] = Region.abdomen,
    verbose: VerboseOpt = False,
) -> None:
    """Write a synthetic CT phantom with known L3 position (for trying l3edge without patient data)."""
    _setup_logging(verbose)
    from l3edge.phantom import write_phantom  # type: ignore[attr-defined,unused-ignore]

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        truth = write_phantom(out_dir, seed, fmt.value, region.value)
    except L3EdgeError as exc:
        raise _fail(out_dir, exc) from None
    except OSError as exc:
        _error(out_dir, exc.strerror or exc)
        raise typer.Exit(EXIT_USAGE) from None
    where = _scan_path(out_dir, fmt.value)
    typer.echo(f"wrote a {fmt.value} phantom ({region.value}, seed {seed}) to {where}")
    typer.echo(f"truth: {_truth_summary(truth)}")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Phantom seed.")] = 0,
    model: ModelOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Make a phantom in a temporary folder, locate L3 in it, and compare with the truth."""
    _setup_logging(verbose)
    from l3edge.locator import L3Locator
    from l3edge.phantom import write_phantom  # type: ignore[attr-defined,unused-ignore]

    try:
        locator = L3Locator.load(model)
    except ModelError as exc:
        raise _fail(model or "model", exc) from None
    with tempfile.TemporaryDirectory(prefix="l3edge-demo-") as tmp:
        try:
            truth = write_phantom(Path(tmp), seed, "dicom", "abdomen")
            result = locator.predict(_scan_path(Path(tmp), "dicom"))
        except L3EdgeError as exc:
            raise _fail("phantom", exc) from None
    typer.echo(f"phantom (seed {seed}): {_truth_summary(truth)}")
    typer.echo(f"l3edge: {_human(result).split(': ', 1)[1]}")
    if result.found and result.z_mm is not None and truth.l3_in_view and truth.l3_z_mm is not None:
        typer.echo(f"z error: {result.z_mm - truth.l3_z_mm:+.1f} mm")
        l3 = truth.vertebrae["L3"]
        if result.slice_z_mm is not None:
            inside = l3["z_bottom"] <= result.slice_z_mm <= l3["z_top"]
            answer = "yes" if inside else "no"
            typer.echo(f"chosen slice (z = {result.slice_z_mm:.1f} mm) lies in the L3 body: {answer}")
    elif result.found != bool(getattr(truth, "l3_in_view", False)):
        typer.echo(
            "mismatch: " + ("L3 reported but not in view" if result.found else "L3 in view but not found")
        )


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


if __name__ == "__main__":
    main()
