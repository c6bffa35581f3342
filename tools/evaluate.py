"""Evaluate a model (checkpoint or OpenVINO IR) on a cache, or cross-validate an architecture on it.

    python -m tools.evaluate cnn4.pt --cache cache/phantoms [--scans ID ...] [--stride 4] [--json report.json]
    python -m tools.evaluate model.xml --cache cache/phantoms
    python -m tools.evaluate model.xml --cache cache/phantoms --refine-cache cache/phantoms-1mm [--refiner R]
    python -m tools.evaluate --folds 5 --arch cnn4 --cache cache/phantoms --steps 600 [--json cv.json]

(cross-validation: tools/crossval.py; the per-scan pipeline: tools/pipeline.py).

Per cached scan this runs the runtime's stages on the cached model-space image: ``normalize`` ->
``predict_strip`` (or ``predict_windows``) -> ``fit_ramp`` -> row -> z [-> ``refine_row`` on the same scan
in the refiner's cache] -> nearest slice, with the locator's rule that a level placed outside the scanned
range is reported not found. Errors are measured on scans with the vertebra in view that the model reports
found: in slices (nearest slice to the predicted z vs nearest slice to the label; for fast phantoms the
simulated slices, not the MIP rows) and in mm (predicted z, as the locator reports it, vs label z). Wrongly
found / not found scans are counted separately. (The runtime resamples only the MIP rows near the coarse
estimate for the refiner, so its fine grid's phase can differ from the cached one by a fraction of a pixel.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from l3edge.errors import L3EdgeError, UsageError
from tools.data import load_cache
from tools.pipeline import evaluate_scans, load_model, load_refiner
from tools.summary import choose_review_below, markdown_table, pm, table_row

log = logging.getLogger("tools.evaluate")


def evaluate(
    model_path: str | Path,
    cache_dir: str | Path,
    scans: list[str] | None = None,
    stride: int = 4,
    device: str = "cpu",
    threshold: float | None = None,
    refine_cache: str | Path | None = None,
    refiner: str | Path | None = None,
    level: str | None = None,
    mirror: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint or IR on a cache (all scans, or the ids in ``scans``), for ``level`` (default:
    the model's), with the mirrored second pass unless ``mirror`` is false.

    With ``refine_cache`` (the same scans in the refiner's model space), the coarse estimates are refined by
    ``refiner`` (checkpoint or IR), by default the refiner the IR names.
    """
    m = load_model(model_path, device, threshold)
    space, cached = load_cache(cache_dir, scans)
    if m.space != space:
        raise UsageError(
            f"{model_path} uses another model space than the cache {cache_dir}; rebuild the cache"
        )
    ref = None
    if refine_cache is not None:
        if refiner is None and Path(model_path).suffix.lower() == ".xml":
            from l3edge.runtime import load_metadata

            name = load_metadata(model_path).refiner
            refiner = Path(model_path).parent / name if name else None
        if refiner is None:
            raise UsageError("--refine-cache needs --refiner (or an IR that names its refiner)")
        ref = load_refiner(refiner, refine_cache, scans, device)
    rep = evaluate_scans(m.run, cached, m.meta, stride, m.output_stride, ref, level, mirror)
    rep["model"] = {
        "path": str(model_path),
        "name": m.name,
        "params": m.params,
        "stride": stride,
        "threshold": m.threshold,
        "refiner": str(refiner) if ref is not None else None,
    }
    rep["table"] = markdown_table([table_row(m.name + f", stride {stride}", rep["summary"], m.params)])
    return rep


def _text_report(rep: dict[str, Any]) -> str:
    s = rep["summary"]
    lines = [
        rep["table"],
        "",
        f"scans {s['n_scans']} (in view {s['n_in_view']}); error slices median {s['error_slices']['median']} "
        f"max {s['error_slices']['max']}; error mm median {s['error_mm']['median']} "
        f"max {s['error_mm']['max']}",
        f"inside the vertebral body: {s['in_body_share']} of {s['n_in_body_checked']}; "
        f"wrongly found {s['wrongly_found']}, wrongly not found {s['wrongly_not_found']}",
    ]
    rv = s.get("review")
    if rv is not None:
        lines.append(
            f"confidence AUROC for 'inside the body': {s.get('confidence_auroc')}; review flagged "
            f"{rv['flagged']} of {s['n_scans']}; not flagged and found: {rv['not_flagged_found']}, of which "
            f"{rv['not_flagged_in_body']} inside the body"
        )
    if "in_body_either_count_share" in s:
        lines.append(f"inside the body by either count (rib or sacrum): {s['in_body_either_count_share']}")
    for g, t in s.get("anatomy", {}).items():
        lines.append(
            f"  {g} anatomy: n={t['n_scans']} (in view {t['n_in_view']}) error {pm(t['error_mm'])} mm, "
            f"inside {t['in_body_share']}, wrong found/not {t['wrongly_found']}/{t['wrongly_not_found']}"
            + (
                f", inside by either count {t['in_body_either_count_share']}"
                if "in_body_either_count_share" in t
                else ""
            )
        )
    for m, t in s.get("levels", {}).items():
        lines.append(
            f"  level {m}: in view {t['n_in_view']}, found {t['found']}, error {pm(t['error_mm'])} mm, "
            f"inside its body {t['in_body_share']}, wrongly found {t['wrongly_found']}"
        )
    for key in ("by_region", "by_variant"):
        for g, t in s.get(key, {}).items():
            lines.append(
                f"  {key[3:]} {g}: n={t['n_scans']} error {pm(t['error_slices'])} slices, "
                f"{pm(t['error_mm'])} mm, inside {t['in_body_share']}, "
                f"wrong found/not {t['wrongly_found']}/{t['wrongly_not_found']}"
            )
    return "\n".join(lines)


def report(rep: dict[str, Any], json_path: Path | None) -> None:
    """Print the text report; also write the whole report (per scan too) as JSON when ``json_path`` is set."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rep, indent=1, default=str))
    print(_text_report(rep))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("model", nargs="?", help="checkpoint (.pt) or OpenVINO IR (.xml); omit with --folds")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--scans", nargs="*", default=None, help="cache ids to evaluate (default: all)")
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--threshold", type=float, default=None, help="presence threshold (default: the model's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="write the full report (per scan too) here")
    ap.add_argument("--refine-cache", help="the same scans cached in the refiner's model space")
    ap.add_argument("--refiner", help="refiner checkpoint or IR (default: the one the IR names)")
    ap.add_argument(
        "--choose-review-below",
        action="store_true",
        help="print the confidence threshold under which no found scan left unflagged is outside the body "
        "(run it on validation scans; export the model with --review-below that value)",
    )
    ap.add_argument("--level", help="level to evaluate (default: the model's)")
    ap.add_argument("--no-mirror", action="store_true", help="skip the mirrored second pass")
    ap.add_argument("--folds", type=int, default=0, help="k-fold cross-validation of --arch instead")
    ap.add_argument("--arch", default="cnn4", choices=["vgg16", "cnn4"])
    ap.add_argument("--ckpt-dir", default=None, help="CV: keep each fold's checkpoint here")
    ap.add_argument("--seed", type=int, default=0)
    for flag, typ in (
        ("--steps", int),
        ("--batch", int),
        ("--lr", float),
        ("--val-frac", float),
        ("--eval-every", int),
        ("--patience", int),
        ("--threads", int),
        ("--time-budget-min", float),
        ("--pretrained", str),
    ):
        ap.add_argument(flag, type=typ, default=None, help="CV training option (see tools.train)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if a.folds:
            from tools.crossval import cross_validate

            cfg = {
                k: getattr(a, k)
                for k in (
                    "steps",
                    "batch",
                    "lr",
                    "val_frac",
                    "eval_every",
                    "patience",
                    "threads",
                    "time_budget_min",
                    "pretrained",
                )
                if getattr(a, k) is not None
            }
            cfg["device"] = a.device
            rep = cross_validate(
                a.cache, a.arch, a.folds, a.seed, a.stride, a.threshold or 0.5, a.ckpt_dir, **cfg
            )
        elif a.model:
            rep = evaluate(
                a.model,
                a.cache,
                a.scans,
                a.stride,
                a.device,
                a.threshold,
                a.refine_cache,
                a.refiner,
                a.level,
                mirror=not a.no_mirror,
            )
        else:
            raise UsageError("give a MODEL (.pt or .xml) or --folds K")
    except L3EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    report(rep, a.json)
    if a.choose_review_below:
        print("review threshold: " + json.dumps(choose_review_below(rep["scans"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
