"""What every command shares: exit codes, logging, the one-line error, the result's human line, options."""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from l3edge.errors import L3EdgeError

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL = 0, 2, 3, 4

log = logging.getLogger("l3edge")


class Mode(Enum):
    auto = "auto"
    strip = "strip"
    window = "window"


class Precision(str, Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if verbose else logging.WARNING,
        format="l3edge: %(levelname)s: %(message)s",
        force=True,
    )


def error_line(where: object, message: object) -> str:
    """The one line a user error gets: ``l3edge: error: <where>: <message>``."""
    text = " ".join(str(message).split())  # one line, whatever the message
    prefix = f"{where}: "
    if text.startswith(prefix):  # readers already name the path
        text = text[len(prefix) :]
    return f"l3edge: error: {where}: {text}"


def error(where: object, message: object) -> None:
    """The one line a user error gets on stderr."""
    typer.echo(error_line(where, message), err=True)


def fail(where: object, exc: L3EdgeError) -> typer.Exit:
    error(where, exc)
    return typer.Exit(exc.exit_code)


def human(r: Any) -> str:
    """The human line of one result."""
    ms = r.timings_ms.get("total", 0.0)
    level = getattr(r, "level", "L3")
    if r.found:
        inst = f" (instance {r.instance_number})" if r.instance_number is not None else ""
        review = ", review" if getattr(r, "review", False) else ""
        return (
            f"{r.path}: {level} at z = {r.z_mm:.1f} mm, slice index {r.slice_index}{inst} of {r.n_slices}, "
            f"confidence {r.confidence:.2f}{review}, {ms:.0f} ms"
        )
    return f"{r.path}: {level} not found in {r.n_slices} slices (presence {r.presence:.2f}), {ms:.0f} ms"


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details (INFO) to stderr.")]
ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="OpenVINO IR .xml (default: $L3EDGE_MODEL, then the bundled model)."),
]
