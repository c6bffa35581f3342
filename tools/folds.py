"""Cross-validation folds by patient, saved with the cache (``folds.json``) so every tool uses the same ones.

``python -m tools.build_cache ... --split [--folds 5] [--seed 0]`` writes them; ``tools.evaluate --folds K``
(tools/crossval.py) uses them when the cache has them (their K must match), else it makes folds the same way.

A patient is the ``patient`` of the scan's metadata (the npz ``names``, a manifest's ``patient`` column), else
the scan itself. Patients are shuffled with the seed, then dealt, largest first, to the fold with the fewest
scans so far: all scans of one patient land in one fold and the folds differ in size by at most one patient.
The file holds cache ids only (no names)::

    {"k": 5, "seed": 0, "by": "patient", "n_scans": N, "n_patients": P, "folds": [[id, ...], ...]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import InputError, UsageError
from tools.data import read_index

FOLDS_NAME = "folds.json"


def patient_of(meta: dict[str, Any]) -> str:
    return str(meta.get("patient") or meta["id"])


def patient_folds(metas: Sequence[dict[str, Any]], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` folds of scan ids, a patient's scans always in the same fold (see the module docstring)."""
    if k < 2:
        raise UsageError("--folds must be >= 2")
    groups: dict[str, list[str]] = {}
    for m in metas:
        groups.setdefault(patient_of(m), []).append(m["id"])
    if len(groups) < k:
        raise UsageError(f"{len(groups)} patients cannot make {k} folds")
    names = sorted(groups)
    perm = np.random.default_rng([seed, 23]).permutation(len(names))
    order = sorted((names[i] for i in perm), key=lambda p: -len(groups[p]))  # stable: shuffled within sizes
    folds: list[list[str]] = [[] for _ in range(k)]
    for p in order:
        smallest = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[smallest].extend(sorted(groups[p]))
    return [sorted(f) for f in folds]


def write_folds(cache_dir: str | Path, k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Make folds over every scan of the cache and write ``folds.json``; returns its content."""
    cache_dir = Path(cache_dir)
    metas = read_index(cache_dir)["scans"]
    folds = patient_folds(metas, k, seed)
    doc = {
        "k": k,
        "seed": seed,
        "by": "patient",
        "n_scans": len(metas),
        "n_patients": len({patient_of(m) for m in metas}),
        "folds": folds,
    }
    tmp = cache_dir / f".{FOLDS_NAME}.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(cache_dir / FOLDS_NAME)
    return doc


def read_folds(cache_dir: str | Path) -> dict[str, Any] | None:
    """The cache's ``folds.json``, or None when it has none."""
    path = Path(cache_dir) / FOLDS_NAME
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        folds = [[str(i) for i in f] for f in doc["folds"]]
        k = int(doc["k"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is damaged ({exc}); rebuild it with build_cache --split") from exc
    if len(folds) != k:
        raise InputError(f"{path} says k={k} but holds {len(folds)} folds; rebuild it")
    return {**doc, "folds": folds}


def folds_for(
    cache_dir: str | Path, metas: Sequence[dict[str, Any]], k: int, seed: int = 0
) -> tuple[list[list[str]], str]:
    """The folds cross-validation uses on ``metas`` (all scans of the cache) and where they came from.

    The cache's ``folds.json`` when it exists (its k must be ``k`` and it must hold exactly these scans),
    else folds by patient made here with ``seed``."""
    doc = read_folds(cache_dir)
    ids = {m["id"] for m in metas}
    if doc is None:
        return patient_folds(metas, k, seed), f"by patient, seed {seed}"
    path = Path(cache_dir) / FOLDS_NAME
    if doc["k"] != k:
        raise UsageError(f"{path} has {doc['k']} folds: use --folds {doc['k']}, or rewrite it with --split")
    listed = [i for f in doc["folds"] for i in f]
    if len(listed) != len(set(listed)) or set(listed) != ids:
        raise UsageError(
            f"{path} does not list exactly the cache's {len(ids)} scans (it lists {len(set(listed))}); "
            "rewrite it with build_cache --split"
        )
    return doc["folds"], f"{path} (seed {doc.get('seed')}, by {doc.get('by')})"
