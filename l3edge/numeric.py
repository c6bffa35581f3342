"""Small numeric helpers shared by the stages (pure numpy, no I/O): numpy's median, percentiles and unique,
the same numbers, without the masked-array package numpy imports for them."""

from __future__ import annotations

from collections.abc import Sequence
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


def percentiles(values: Any, qs: Sequence[float]) -> list[float]:
    """``np.percentile(values, qs)`` (the default, linear method), the same numbers, without ``numpy.ma``
    (numpy's quantile imports it through ``np.unique``, see :func:`median`). No NaN in ``values``; NaN
    for empty input.

    As numpy does: the virtual index ``(n - 1) * q / 100`` between the order statistics below and above it,
    ``lo + (hi - lo) * g``, or ``hi - (hi - lo) * (1 - g)`` when the fraction ``g`` is half or more.
    """
    a = np.asarray(values).ravel()
    n = a.size
    if n == 0:
        return [float("nan")] * len(qs)
    spots = []
    for q in qs:
        virtual = (n - 1) * (float(q) / 100)
        below = n - 1 if virtual >= n - 1 else int(np.floor(virtual))
        spots.append((virtual, below, min(below + 1, n - 1)))
    part = np.partition(a, sorted({i for _, lo, hi in spots for i in (lo, hi)}))
    out = []
    for virtual, lo, hi in spots:
        gamma = np.float64(virtual - lo)  # past the last value: lo == hi, the last value whatever gamma is
        low, high = part[lo], part[hi]
        diff = high - low
        value = high - diff * (1 - gamma) if gamma >= 0.5 else low + diff * gamma
        out.append(float(value))
    return out


def unique_sorted(values: Any) -> np.ndarray:
    """``np.unique(values)`` for a 1-D array of integers, without ``numpy.ma`` (see :func:`percentiles`)."""
    s = np.sort(np.asarray(values).ravel())
    if s.size == 0:
        return s
    return s[np.concatenate(([True], s[1:] != s[:-1]))]
