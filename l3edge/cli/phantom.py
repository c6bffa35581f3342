"""``l3edge phantom`` (write a synthetic CT with known levels) and ``l3edge demo`` (phantom -> predict)."""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from l3edge.cli.common import EXIT_USAGE, ModelOpt, VerboseOpt, error, fail, human, setup_logging
from l3edge.errors import L3EdgeError, ModelError

if TYPE_CHECKING:
    from l3edge.phantom import Truth


class Fmt(str, Enum):
    dicom = "dicom"
    nifti = "nifti"


class Region(str, Enum):
    abdomen = "abdomen"
    cap = "cap"
    wholebody = "wholebody"
    chest = "chest"
    spine = "spine"


def _truth_summary(truth: Truth) -> str:
    if truth.l3_in_view and truth.l3_z_mm is not None:
        return f"L3 in view at z = {truth.l3_z_mm:.1f} mm"
    return "L3 not in view"


def _scan_path(out_dir: Path, fmt: str) -> Path:
    """Where write_phantom put the scan: the folder (DICOM) or the NIfTI file in it."""
    return out_dir / "phantom.nii.gz" if fmt == "nifti" else out_dir


def phantom(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the phantom into.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    fmt: Annotated[Fmt, typer.Option("--format", help="File format.")] = Fmt.dicom,
    region: Annotated[Region, typer.Option(help="Body region covered by the scan.")] = Region.abdomen,
    verbose: VerboseOpt = False,
) -> None:
    """Write a synthetic CT phantom with known L3 position (for trying l3edge without patient data)."""
    setup_logging(verbose)
    from l3edge.phantom import write_phantom  # type: ignore[attr-defined,unused-ignore]

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        truth = write_phantom(out_dir, seed, fmt.value, region.value)
    except L3EdgeError as exc:
        raise fail(out_dir, exc) from None
    except OSError as exc:
        error(out_dir, exc.strerror or exc)
        raise typer.Exit(EXIT_USAGE) from None
    where = _scan_path(out_dir, fmt.value)
    typer.echo(f"wrote a {fmt.value} phantom ({region.value}, seed {seed}) to {where}")
    typer.echo(f"truth: {_truth_summary(truth)}")


def demo(
    seed: Annotated[int, typer.Option(help="Phantom seed.")] = 0,
    model: ModelOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Make a phantom in a temporary folder, locate L3 in it, and compare with the truth."""
    setup_logging(verbose)
    from l3edge.locator import L3Locator
    from l3edge.phantom import write_phantom  # type: ignore[attr-defined,unused-ignore]

    try:
        locator = L3Locator.load(model)
    except ModelError as exc:
        raise fail(model or "model", exc) from None
    with tempfile.TemporaryDirectory(prefix="l3edge-demo-") as tmp:
        try:
            truth = write_phantom(Path(tmp), seed, "dicom", "abdomen")
            result = locator.predict(_scan_path(Path(tmp), "dicom"))
        except L3EdgeError as exc:
            raise fail("phantom", exc) from None
    typer.echo(f"phantom (seed {seed}): {_truth_summary(truth)}")
    typer.echo(f"l3edge: {human(result).split(': ', 1)[1]}")
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
