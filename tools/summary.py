"""Summaries of per-scan evaluation rows (tools.pipeline.locate_cached): errors, per level, per scan range and
variant, the confidence's AUROC, the review flag, and the seed's table.

What counts where: errors (slices and mm) over scans with the level in view that are reported found; "inside
the vertebral body" only where the labels give the body's extent (phantoms; not CSV or MIP-collection labels);
wrongly found / wrongly not found separately. ``cost_mm`` (used for early stopping) is the mean per scan of
|error| capped at 100 mm, 100 for a wrong found / not found, 0 for a right miss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISS_COST_MM = 100.0
TRANSITIONAL = ("ribs11", "ribs13", "lumbar4_sacralised_l5", "lumbar6")
"""Variants whose vertebral counts differ from 12 rib pairs and 5 lumbar vertebrae (reported apart)."""


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "sd": None, "median": None, "max": None, "n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 3),
        "sd": round(float(a.std()), 3),
        "median": round(float(np.median(a)), 3),
        "max": round(float(a.max()), 3),
        "n": int(a.size),
    }


def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` for ``labels`` (ties count half); None without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return round(float(greater / (pos.size * neg.size)), 4)


def choose_review_below(results: list[dict[str, Any]], margin: float = 0.02) -> dict[str, Any]:
    """The lowest confidence threshold under which every found scan of normal anatomy left unflagged lies
    inside the body (transitional anatomy is left to the counts check and reported apart).

    Scans flagged for another reason (counts disagree, interpolated) stay flagged. Choose it on validation
    scans, never on the test set; ``margin`` is added above the worst miss's confidence."""
    found = [
        r
        for r in results
        if r["outcome"] == "hit"
        and r["in_body"] is not None
        and not set(r.get("variants") or []) & set(TRANSITIONAL)
    ]
    misses = [r["confidence"] for r in found if not r["in_body"] and not r.get("review_other")]
    t = round(max(misses) + margin, 4) if misses else 0.0
    kept = [r for r in found if r["confidence"] >= t and not r.get("review_other")]
    return {
        "review_below": t,
        "found": len(found),
        "left_unflagged": len(kept),
        "unflagged_inside": sum(bool(r["in_body"]) for r in kept),
    }


def choose_review_youden(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The confidence threshold that best separates wrong answers from right ones (Youden's J: the share of
    wrong answers flagged minus the share of right ones flagged, largest), over every found scan, transitional
    anatomy included: a right answer is found inside the body of the level in view, a wrong one is any other
    found answer (outside the body, or the level not in view at all).

    Scans flagged for another reason count as flagged whatever their confidence. J is constant between two
    neighbouring confidences; the threshold is the middle of the best such gap, so that it does not sit on
    one scan's confidence. Choose it on validation scans, never on the test set."""
    found = [r for r in results if r["found"]]
    right = [bool(r["in_view"] and r["in_body"]) for r in found]
    n_right, n_wrong = sum(right), len(right) - sum(right)
    if not n_right or not n_wrong:
        return {"review_below": 0.0, "found": len(found), "right": n_right, "wrong": n_wrong}
    conf = np.array([r["confidence"] for r in found], dtype=np.float64)
    other = np.array([bool(r.get("review_other")) for r in found])
    ok = np.array(right)
    j, t, flagged = _best_cut(conf, other, ~ok, [ok])
    return {
        "review_below": t,
        "youden_j": j,
        "right": n_right,
        "right_flagged": int(flagged[ok].sum()),
        "wrong": n_wrong,
        "wrong_flagged": int(flagged[~ok].sum()),
    }


def _best_cut(
    conf: np.ndarray, other: np.ndarray, wrong: np.ndarray, right_groups: list[np.ndarray]
) -> tuple[float, float, np.ndarray]:
    """Youden's J over thresholds: the share of ``wrong`` answers flagged minus the mean share of right ones
    flagged over ``right_groups`` (masks), a scan being flagged when ``other`` or below the threshold. J is
    constant between neighbouring confidences, so the threshold is the middle of the best gap. Returns J and
    the threshold (both rounded to 4 places) and which scans that threshold flags."""
    cuts = np.unique(np.concatenate([[0.0], conf, [1.0 + 1e-9]]))
    best: tuple[float, float, np.ndarray] = (-2.0, 0.0, other)
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        t = 0.5 * (lo + hi)
        flagged = other | (conf < t)
        j = float(flagged[wrong].mean() - np.mean([flagged[g].mean() for g in right_groups]))
        if j > best[0] + 1e-12:
            best = (j, float(t), flagged)
    return round(best[0], 4), round(best[1], 4), best[2]


def choose_review_pooled(results: list[dict[str, Any]], real: list[dict[str, Any]]) -> dict[str, Any]:
    """Youden's J over validation phantoms and real scans together (issue 18: a flag that means the same on
    real CT): the share of wrong answers flagged (phantoms and real pooled) minus the mean of two shares of
    right answers flagged, the phantoms' and the real scans' (``tools.realdev --json`` rows: ``found``,
    ``inside``, ``has_l3``, ``confidence``, ``review_other``).

    Right answers on real CT have lower confidences than on phantoms (their ladders fit less exactly, their
    presence is lower), and a few wrong phantom answers (transitional spines counted wrongly with every check
    agreeing) reach confidences no real answer has; Youden's J over phantoms alone then puts the threshold
    among the real right answers. Weighting the real right answers like the phantoms' keeps it where both
    domains say. Choose it on validation phantoms and real development scans, never on a test set."""
    found = [r for r in results if r["found"]]
    ok = [bool(r["in_view"] and r["in_body"]) for r in found]
    conf = [float(r["confidence"]) for r in found]
    other = [bool(r.get("review_other")) for r in found]
    src = [0] * len(found)
    for r in real:
        if r.get("found"):
            ok.append(bool(r.get("has_l3") and r.get("inside")))
            conf.append(float(r["confidence"]))
            other.append(bool(r.get("review_other")))
            src.append(1)
    c, o, y, s = (np.asarray(v) for v in (conf, other, ok, src))
    groups = [y & (s == k) for k in (0, 1) if (y & (s == k)).any()]
    if not groups or y.all():
        return {"review_below": 0.0, "right": int(y.sum()), "wrong": int((~y).sum())}
    j, t, flagged = _best_cut(c, o, ~y, groups)
    return {
        "review_below": t,
        "youden_j": j,
        "right_phantoms": int((y & (s == 0)).sum()),
        "right_phantoms_flagged": int((flagged & y & (s == 0)).sum()),
        "right_real": int((y & (s == 1)).sum()),
        "right_real_flagged": int((flagged & y & (s == 1)).sum()),
        "wrong": int((~y).sum()),
        "wrong_flagged": int((flagged & ~y).sum()),
    }


def _levels_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    names: list[str] = []
    for r in results:
        names += [m for m in r.get("levels", {}) if m not in names]
    out = {}
    for m in names:
        rows = [r["levels"][m] for r in results if m in r.get("levels", {})]
        in_view = [x for x in rows if x["in_view"]]
        errs = [x["error_mm"] for x in in_view if x["error_mm"] is not None]
        body = [x["in_body"] for x in in_view if x["in_body"] is not None]
        out[m] = {
            "n_in_view": len(in_view),
            "found": sum(x["found"] for x in in_view),
            "error_mm": _stats(errs),
            "in_body_share": round(float(np.mean(body)), 4) if body else None,
            "wrongly_found": sum(x["found"] and not x["in_view"] for x in rows),
        }
    return out


def summarize(results: list[dict[str, Any]], breakdown: bool = True) -> dict[str, Any]:
    """Totals over per-scan results (see the module docstring for what counts where)."""
    hits = [r for r in results if r["error_slices"] is not None]
    in_body = [r["in_body"] for r in results if r["in_body"] is not None]
    cost = [
        min(r["error_mm"], MISS_COST_MM)
        if r["outcome"] == "hit" and r["error_mm"] is not None
        else 0.0
        if r["outcome"] == "true_absent"
        else MISS_COST_MM
        for r in results
    ]
    checked = [r for r in results if r["outcome"] == "hit" and r["in_body"] is not None]
    not_review = [r for r in checked if not r.get("review")]
    s: dict[str, Any] = {
        "n_scans": len(results),
        "n_in_view": sum(r["in_view"] for r in results),
        "error_slices": _stats([r["error_slices"] for r in hits]),
        "error_mm": _stats([r["error_mm"] for r in hits]),
        "in_body_share": round(float(np.mean(in_body)), 4) if in_body else None,
        "n_in_body_checked": len(in_body),
        "wrongly_found": sum(r["outcome"] == "false_found" for r in results),
        "wrongly_not_found": sum(r["outcome"] == "missed" for r in results),
        "ms_per_scan": round(float(np.mean([r["ms"] for r in results])), 2) if results else None,
        "cost_mm": round(float(np.mean(cost)), 3) if cost else math.inf,
        "confidence_auroc": auroc([r["confidence"] for r in checked], [bool(r["in_body"]) for r in checked]),
        "review": {
            "flagged": sum(bool(r.get("review")) for r in results),
            "not_flagged_found": len(not_review),
            "not_flagged_in_body": sum(bool(r["in_body"]) for r in not_review),
        },
    }
    either = [r["in_body_either"] for r in results if r.get("in_body_either") is not None]
    if either:
        s["in_body_either_count_share"] = round(float(np.mean(either)), 4)
    if any(r.get("levels") for r in results):
        s["levels"] = _levels_summary(results)
    if breakdown and any(r.get("variants") is not None for r in results):
        trans = [r for r in results if set(r.get("variants") or []) & set(TRANSITIONAL)]
        normal = [r for r in results if not set(r.get("variants") or []) & set(TRANSITIONAL)]
        s["anatomy"] = {"normal": summarize(normal, False), "transitional": summarize(trans, False)}
    if breakdown:
        regions = sorted({str(r["region"]) for r in results if r.get("region") is not None})
        if regions:
            s["by_region"] = {
                g: summarize([r for r in results if str(r.get("region")) == g], False) for g in regions
            }
        if any("variants" in r for r in results):
            # A scan counts under each of its variants (``none`` when it has none).
            def labels(r: dict[str, Any]) -> list[str]:
                return list(r.get("variants") or []) or ["none"]

            variants = sorted({v for r in results for v in labels(r)})
            s["by_variant"] = {v: summarize([r for r in results if v in labels(r)], False) for v in variants}
    return s


def pm(st: dict[str, Any]) -> str:
    return "-" if st["mean"] is None else f"{st['mean']:.2f} ± {st['sd']:.2f}"


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} K"


def table_row(method: str, s: dict[str, Any], params: int | None) -> list[str]:
    return [
        method,
        pm(s["error_slices"]),
        pm(s["error_mm"]),
        _params(params),
        f"{s['ms_per_scan'] / 1000:.3f} s" if s["ms_per_scan"] is not None else "-",
    ]


def markdown_table(rows: list[list[str]]) -> str:
    """The seed's table: method | error slices | error mm | params | time per scan."""
    head = ["method", "error (slices)", "error (mm)", "params", "time per scan"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
