"""k-fold cross-validation by scan: train on k-1 folds, test on the held-out one, never on training scans.

python -m tools.evaluate --folds 5 --arch cnn4 --cache cache/phantoms --steps 600 [--json cv.json]
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import UsageError
from tools.checkpoint import checkpoint_metadata
from tools.data import load_cache
from tools.pipeline import evaluate_scans, torch_runner
from tools.summary import markdown_table, summarize, table_row
from tools.train import train_on

log = logging.getLogger("tools.crossval")


def cross_validate(
    cache_dir: str | Path,
    arch: str,
    folds: int = 5,
    seed: int = 0,
    stride: int = 4,
    threshold: float = 0.5,
    out_dir: str | Path | None = None,
    **train_cfg: Any,
) -> dict[str, Any]:
    """k-fold CV by scan: train on k-1 folds with tools.train.train_on, evaluate on the held-out fold only."""
    if folds < 2:
        raise UsageError("--folds must be >= 2")
    space, scans = load_cache(cache_dir)
    if len(scans) < folds:
        raise UsageError(f"{len(scans)} scans cannot make {folds} folds")
    perm = np.random.default_rng([seed, 11]).permutation(len(scans))
    results, per_fold, params = [], [], None
    for f in range(folds):
        test_idx = set(perm[f::folds].tolist())
        train_scans = [s for i, s in enumerate(scans) if i not in test_idx]
        test_scans = [scans[i] for i in sorted(test_idx)]
        out = Path(out_dir) / f"{arch}-fold{f}.pt" if out_dir else None
        log.info("fold %d/%d: train %d, test %d", f + 1, folds, len(train_scans), len(test_scans))
        model, metrics = train_on(train_scans, space, arch, out, seed=seed, **train_cfg)
        params = sum(p.numel() for p in model.parameters())
        ck = {"arch": arch, "space_obj": space, "levels": metrics.get("levels") or [], "level": "L3"}
        rep = evaluate_scans(torch_runner(model), test_scans, checkpoint_metadata(ck, threshold), stride, 16)
        for r in rep["scans"]:
            r["fold"] = f
        results += rep["scans"]
        fold_summary = rep["summary"]
        fold_summary["train"] = {
            k: metrics[k]
            for k in ("steps_done", "stopped", "seconds", "best_step", "loss_first", "loss_last")
        }
        per_fold.append(fold_summary)
        log.info(
            "fold %d: error %.2f mm, %s slices, wrong found/not %d/%d",
            f + 1,
            fold_summary["error_mm"]["mean"] or math.nan,
            fold_summary["error_slices"]["mean"],
            fold_summary["wrongly_found"],
            fold_summary["wrongly_not_found"],
        )
    summary = summarize(results)
    method = f"{arch} ({folds}-fold CV, stride {stride})"
    return {
        "scans": results,
        "summary": summary,
        "folds": per_fold,
        "model": {
            "arch": arch,
            "params": params,
            "stride": stride,
            "threshold": threshold,
            "train": train_cfg,
        },
        "table": markdown_table([table_row(method, summary, params)]),
    }
