"""``l3edge info``: the model's metadata and where it was found."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from l3edge.cli.common import ModelOpt, VerboseOpt, fail, setup_logging
from l3edge.errors import ModelError


def info(
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Print the model's metadata and where it was found."""
    setup_logging(verbose)
    from l3edge.runtime import load_metadata, resolve_model

    where: object = "model"
    try:
        location = resolve_model(model)
        where = location.path
        meta = load_metadata(location.path)
    except ModelError as exc:
        raise fail(where, exc) from None
    if as_json:
        d = json.loads(meta.to_json())
        d["path"], d["found_via"] = str(location.path), location.source
        typer.echo(json.dumps(d))
        return
    from l3edge.place import review_below  # the threshold the runtime applies to this model

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
        ("levels", ", ".join(meta.model_levels)),
        ("review below", f"confidence {review_below(meta):g}"),
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
