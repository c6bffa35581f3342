"""Small numeric helpers shared by the stages (pure numpy, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np


def median(values: Any) -> float:
    """``float(np.median(values))``, the same number, without importing ``numpy.ma``.

    numpy's median checks its answer for NaN through ``np.ma.isMaskedArray``, which imports the whole
    masked-array package (about 10 ms) in the first call of every process; a one-scan ``l3edge predict`` pays
    that for nothing. This follows numpy's own steps (partition on the middle element or two and the last,
    the mean of the middle, NaN when the data hold one) over the flattened values. Empty input gives NaN.
    """
    a = np.asarray(values).ravel()
    n = a.size
    if n == 0:
        return float("nan")
    half = n // 2
    kth = [half - 1, half] if n % 2 == 0 else [half]
    inexact = bool(np.issubdtype(a.dtype, np.inexact))
    if inexact:
        kth.append(-1)  # numpy puts the largest last: a NaN sorts there
    part = np.partition(a, kth)
    if inexact and np.isnan(part[-1]):
        return float("nan")
    middle = part[half - 1 : half + 1] if n % 2 == 0 else part[half : half + 1]
    return float(np.mean(middle, axis=0))
