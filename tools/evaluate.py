"""Evaluate a model (checkpoint or OpenVINO IR) on a cache, or cross-validate an architecture on it.

    python -m tools.evaluate cnn4.pt --cache cache/phantoms [--scans ID ...] [--stride 4] [--json report.json]
    python -m tools.evaluate model.xml --cache cache/phantoms
    python -m tools.evaluate model.xml --cache cache/phantoms --refine-cache cache/phantoms-1mm [--refiner R]
    python -m tools.evaluate --folds 5 --arch cnn4 --cache cache/phantoms --steps 600 [--json cv.json]
    python -m tools.evaluate --folds 5 --init models/CKPT.pt --cache cache/kanavati --int8 [--per-scan]

(cross-validation: tools/crossval.py; the per-scan pipeline: tools/pipeline.py).

Per cached scan this runs the runtime's stages on the cached model-space image: ``normalize`` ->
``predict_strip`` (or ``predict_windows``) -> ``fit_ramp`` -> row -> z [-> ``refine_row`` on the same scan
in the refiner's cache] -> nearest slice, with the locator's rule that a level placed outside the scanned
range is reported not found. Errors are measured on scans with the vertebra in view that the model reports
found: in slices (nearest slice to the predicted z vs nearest slice to the label; for fast phantoms the
simulated slices, not the MIP rows) and in mm (predicted z, as the locator reports it, vs label z). Wrongly
found / not found scans are counted separately. (The runtime resamples only the MIP rows near the coarse
estimate for the refiner, so its fine grid's phase can differ from the cached one by a fraction of a pixel.)
"Inside the vertebral body" needs the body's extent (phantom truths); labels from a CSV, a manifest or an npz
give a position only, and the report says so instead of a share.
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
from tools.summary import (
    choose_review_below,
    choose_review_pooled,
    choose_review_youden,
    markdown_table,
    pm,
    table_row,
)

log = logging.getLogger("tools.evaluate")
PER_SCAN_MAX = 50
"""Reports of up to this many scans print their per-scan rows (more: ``--per-scan``)."""


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


def _outcomes(scans: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(r["outcome"] == k for r in scans) for k in ("hit", "missed", "false_found", "true_absent")}


def _summary_lines(s: dict[str, Any], scans: list[dict[str, Any]]) -> list[str]:
    """What the labels support: errors over the found scans with the level in view, found / not found, and
    "inside the body" only where the labels give the body's extent."""
    o, es, em = _outcomes(scans), s["error_slices"], s["error_mm"]
    lines = [
        f"scans {s['n_scans']}: {s['n_in_view']} with the level in view ({o['hit']} found, {o['missed']} "
        f"not found), {s['n_scans'] - s['n_in_view']} without ({o['true_absent']} reported absent, "
        f"{o['false_found']} wrongly found)"
    ]
    if es["n"]:
        lines.append(
            f"error over the {es['n']} found scans with the level in view: {pm(es)} slices (median "
            f"{es['median']}, max {es['max']}), {pm(em)} mm (median {em['median']}, max {em['max']})"
        )
    else:
        lines.append("error: no scan with the level in view was found, so there is no error to measure")
    no_extent = sum(1 for r in scans if r["in_view"] and r["in_body"] is None)
    if s["n_in_body_checked"]:
        lines.append(
            f"inside the vertebral body: {100 * s['in_body_share']:.1f}% of the {s['n_in_body_checked']} "
            "scans with the level in view whose labels give the body's extent (not found counts as outside)"
            + (f"; {no_extent} more have labels without it" if no_extent else "")
        )
    elif s["n_in_view"]:
        lines.append(
            "inside the vertebral body: not measurable: these labels give the level's position only, not the "
            "top and bottom of its body (labels from a CSV or an npz carry no body extent)"
        )
    return lines


def _per_scan_lines(scans: list[dict[str, Any]]) -> list[str]:
    head = (
        "| id | in view | found | label slice | predicted slice | error (slices) | error (mm) | confidence |"
    )
    rows = [head, "|" + "---|" * 8]
    for r in scans:
        cells = [r["id"], r["in_view"], r["found"], r["truth_slice"], r["pred_slice"]]
        cells += [r["error_slices"], r["error_mm"], r["confidence"]]
        rows.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    return rows


def _text_report(rep: dict[str, Any], per_scan: bool = False) -> str:
    stages = rep.get("stages") or {"": {"summary": rep["summary"], "scans": rep["scans"]}}
    lines = [rep["table"]]
    if rep.get("folds_from"):
        lines.append(f"folds: {rep['folds_from']}")
    for name, st in stages.items():
        lines += ["", name] if name else [""]
        lines += _summary_lines(st["summary"], st["scans"])
    s = rep["summary"]
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
        groups = s.get(key, {})
        if set(groups) <= {"none"}:  # scans without regions or variants (real labels): nothing to break down
            continue
        for g, t in groups.items():
            lines.append(
                f"  {key[3:]} {g}: {t['n_scans']} scans ({t['n_in_view']} in view), error over "
                f"{t['error_mm']['n']} found: {pm(t['error_slices'])} slices, {pm(t['error_mm'])} mm, "
                f"inside {t['in_body_share']}, wrongly found / not found "
                f"{t['wrongly_found']}/{t['wrongly_not_found']}"
            )
    scans = rep["scans"]
    if per_scan or len(scans) <= PER_SCAN_MAX:
        lines += ["", *_per_scan_lines(scans)]
    else:
        lines.append(f"(per-scan rows: --per-scan, or --json for everything; {len(scans)} scans)")
    return "\n".join(lines)


def report(rep: dict[str, Any], json_path: Path | None, per_scan: bool = False) -> None:
    """Print the text report; also write the whole report (per scan too) as JSON when ``json_path`` is set."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rep, indent=1, default=str))
    print(_text_report(rep, per_scan))


_CV_TRAIN = (
    ("steps", int),
    ("batch", int),
    ("lr", float),
    ("val_frac", float),
    ("eval_every", int),
    ("patience", int),
    ("threads", int),
    ("time_budget_min", float),
    ("pretrained", str),
    ("init", str),
    ("hidden", int),
    ("k_outputs", int),
    ("levels", str),
)


def _cv_arch(a: argparse.Namespace) -> str:
    """--arch, else the --init checkpoint's architecture, else cnn4."""
    if a.arch:
        return str(a.arch)
    if a.init:
        from tools.checkpoint import load_checkpoint

        try:
            return str(load_checkpoint(a.init)[1]["arch"])
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise UsageError(f"--init {a.init}: not an l3edge checkpoint ({exc})") from exc
    return "cnn4"


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
    ap.add_argument(
        "--per-scan", action="store_true", help=f"print per-scan rows (always up to {PER_SCAN_MAX})"
    )
    ap.add_argument("--refine-cache", help="the same scans cached in the refiner's model space")
    ap.add_argument("--refiner", help="refiner checkpoint or IR (default: the one the IR names)")
    ap.add_argument(
        "--choose-review-below",
        action="store_true",
        help="print the confidence threshold under which no found scan left unflagged is outside the body "
        "(run it on validation scans; export the model with --review-below that value)",
    )
    ap.add_argument(
        "--review-rule",
        choices=["youden", "normal-misses"],
        default="youden",
        help="the rule of --choose-review-below: youden (the threshold that best separates wrong from right "
        "answers, all anatomy; model 0.4.0; with --real-variants, real right answers weigh as much as the "
        "phantoms': model 0.5.0) or normal-misses (no unflagged miss on normal anatomy; 0.3.0)",
    )
    ap.add_argument(
        "--real-variants",
        type=Path,
        help="tools.realdev --json rows of real scans (e.g. --variants of real_dev) to pool with the cache's "
        "scans in --choose-review-below (youden rule)",
    )
    ap.add_argument("--level", help="level to evaluate (default: the model's)")
    ap.add_argument("--no-mirror", action="store_true", help="skip the mirrored second pass")
    cv = ap.add_argument_group(
        "cross-validation (tools/crossval.py; folds from the cache's folds.json if any)"
    )
    cv.add_argument("--folds", type=int, default=0, help="k-fold cross-validation of --arch instead")
    cv.add_argument("--arch", default=None, choices=["vgg16", "cnn4"], help="default: --init's, else cnn4")
    cv.add_argument("--ckpt-dir", default=None, help="keep each fold's checkpoint (and INT8 IR) here")
    cv.add_argument("--seed", type=int, default=0)
    for name, typ in _CV_TRAIN:
        cv.add_argument(
            "--" + name.replace("_", "-"), type=typ, default=None, help="training option (tools.train)"
        )
    cv.add_argument("--widths", type=int, nargs="+", default=None, help="conv widths (training option)")
    cv.add_argument("--no-augment", action="store_true", help="training option (tools.train)")
    cv.add_argument("--prune", type=float, default=None, help="also prune each fold's model at this ratio")
    cv.add_argument("--prune-steps", type=int, default=300, help="fine-tune steps after pruning")
    cv.add_argument("--prune-lr", type=float, default=1e-4)
    cv.add_argument("--prune-budget-min", type=float, default=None, help="time budget of that fine-tune")
    cv.add_argument("--int8", action="store_true", help="also INT8-quantize the last model of each fold")
    cv.add_argument("--calib-windows", type=int, default=300, help="INT8 calibration windows per fold")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    real = None
    if a.real_variants is not None:
        try:
            real = json.loads(a.real_variants.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {a.real_variants}: {exc}", file=sys.stderr)
            return UsageError.exit_code
    try:
        if a.folds:
            from tools.crossval import cross_validate

            cfg: dict[str, Any] = {
                k: getattr(a, k) for k, _ in (*_CV_TRAIN, ("widths", int)) if getattr(a, k) is not None
            }
            cfg.update(device=a.device, augment=not a.no_augment)
            chain = dict(prune_steps=a.prune_steps, prune_lr=a.prune_lr, prune_budget_min=a.prune_budget_min)
            rep = cross_validate(
                a.cache,
                _cv_arch(a),
                a.folds,
                a.seed,
                a.stride,
                a.threshold or 0.5,
                a.ckpt_dir,
                prune=a.prune,
                int8=a.int8,
                calib_windows=a.calib_windows,
                **chain,
                **cfg,
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
    report(rep, a.json, a.per_scan)
    if a.choose_review_below:
        if a.review_rule == "normal-misses":
            chosen = choose_review_below(rep["scans"])
        elif real is not None:
            chosen = choose_review_pooled(rep["scans"], real)
        else:
            chosen = choose_review_youden(rep["scans"])
        print("review threshold: " + json.dumps(chosen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
