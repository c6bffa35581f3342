"""Average the weights of checkpoints of one network (a "model soup").

    python -m tools.average recovery_a.pt recovery_b.pt --out soup.pt

Fine-tunes that start from the same weights (a recovery run and its continuation, runs with other learning
rates) usually stay in one basin, and the mean of their weights is often better than either; the networks here
have no batch norm whose statistics would need recomputing. The inputs must share architecture, widths, head,
levels and model space. The output keeps the first checkpoint's record (pruning, config, parent) and lists its
sources with their SHA-256 in ``metrics["average_of"]``. Validate the result like any other candidate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from l3edge.errors import UsageError
from tools.checkpoint import load_checkpoint, save_checkpoint, sha256_file

_SAME = ("arch", "widths", "hidden", "outputs", "space", "levels")


def average(paths: list[str | Path], out: str | Path) -> str:
    """Write the mean of the checkpoints' weights to ``out``; returns its SHA-256."""
    if len(paths) < 2:
        raise UsageError("give at least two checkpoints to average")
    loaded = [load_checkpoint(p) for p in paths]
    first_model, first = loaded[0]
    for p, (_, ck) in zip(paths[1:], loaded[1:], strict=True):
        diff = [k for k in _SAME if (ck.get(k) or None) != (first.get(k) or None)]  # [] = absent
        if diff:
            raise UsageError(f"{p} differs from {paths[0]} in {', '.join(diff)}: not the same network")
    with torch.no_grad():
        for name, tensor in first_model.state_dict().items():
            tensor.copy_(sum(m.state_dict()[name].double() for m, _ in loaded).div(len(loaded)))
    written = {"format", "state_dict", "space", "space_obj", "arch", "widths", "hidden", "outputs"}  # by save
    info = {k: v for k, v in first.items() if k not in written}
    info["metrics"] = {"average_of": [{"file": Path(p).name, "sha256": sha256_file(p)} for p in paths]}
    return save_checkpoint(out, first_model, str(first["arch"]), first["space_obj"], **info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.average", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="l3edge checkpoints (.pt) of one network")
    ap.add_argument("--out", required=True, help="averaged checkpoint (.pt)")
    a = ap.parse_args(argv)
    try:
        sha = average(a.checkpoints, a.out)
    except (UsageError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.out} sha256 {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
