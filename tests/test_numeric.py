"""l3edge.numeric.median is numpy's median, bit for bit, without importing numpy.ma."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l3edge.numeric import median, percentiles, unique_sorted


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int16])
def test_median_is_numpys(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for n in [*range(1, 12), 100, 101, 1000]:
        for _ in range(20):
            a = rng.normal(0, 50, n) if np.issubdtype(dtype, np.floating) else rng.integers(-99, 99, n)
            a = a.astype(dtype)
            assert median(a) == float(np.median(a)), (n, a)
            assert median(list(a)) == float(np.median(list(a)))
    assert median(np.array([1.0, 2.0, 2.0, 3.0])) == 2.0
    assert median(np.array([[1.0, 5.0], [3.0, 4.0]])) == 3.5  # flattened, as numpy does with no axis


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_percentiles_are_numpys(dtype: type) -> None:
    rng = np.random.default_rng(1)
    qs = [0.0, 2.0, 33.3, 50.0, 90.0, 99.9, 100.0]
    for n in [*range(1, 9), 100, 1001, 5000]:
        for _ in range(10):
            a = rng.normal(-500, 400, n) if np.issubdtype(dtype, np.floating) else rng.integers(-999, 999, n)
            a = a.astype(dtype)
            assert percentiles(a, qs) == [float(x) for x in np.percentile(a, qs)], (n, a)
    assert all(np.isnan(percentiles(np.array([], np.float32), [2.0, 90.0])))


def test_unique_sorted_is_numpys() -> None:
    rng = np.random.default_rng(2)
    for n in (0, 1, 2, 7, 50):
        a = rng.integers(-5, 5, n)
        np.testing.assert_array_equal(unique_sorted(a), np.unique(a))
        assert unique_sorted(a).dtype == np.unique(a).dtype


def test_median_nan_and_empty() -> None:
    assert np.isnan(median(np.array([1.0, np.nan, 3.0])))
    assert np.isnan(median(np.array([np.nan])))
    assert np.isnan(median(np.array([], dtype=float)))


def test_median_leaves_numpy_ma_out() -> None:
    code = (
        "import sys, numpy as np\nfrom l3edge.numeric import median, percentiles, unique_sorted\n"
        "median(np.array([1.0, 2.0, 3.0, np.nan]))\npercentiles(np.arange(200.0), [2.0, 90.0])\n"
        "unique_sorted(np.array([3, 1, 3]))\nassert 'numpy.ma' not in sys.modules\nprint('ok')"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
