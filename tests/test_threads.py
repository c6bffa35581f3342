"""One locator shared by many threads: no 'Infer Request is busy', results identical to serial calls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.locator import L3Locator
from l3edge.runtime import OVModel
from tests.tiny_model import WINDOW_H, WINDOW_W

N_THREADS = 12


def _together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``n`` threads released at the same moment; re-raise the first error."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def _comparable(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    d.pop("timings_ms")
    return d


def test_bundled_locator_shared_by_threads_matches_serial() -> None:
    """The bundled model's CNN takes milliseconds, so concurrent runs overlap for certain; with a single
    infer request this raised RuntimeError('Infer Request is busy')."""
    from l3edge.phantom import fast_projection

    locator = L3Locator.load(threads=1)
    projections = [fast_projection(seed, 2.0, "abdomen")[0] for seed in range(4)]
    serial = [_comparable(locator.predict_projection(p)) for p in projections]
    assert any(s["found"] for s in serial)
    for _ in range(3):
        got = _together(N_THREADS, lambda i: _comparable(locator.predict_projection(projections[i % 4])))
        assert got == [serial[i % 4] for i in range(N_THREADS)]


def test_ov_model_run_from_many_threads(tiny_model: Path) -> None:
    model = OVModel.load(tiny_model, threads=1)
    rng = np.random.default_rng(0)
    batches = [rng.random((2, 3, WINDOW_H + 16 * (i % 3), WINDOW_W), np.float32) for i in range(N_THREADS)]
    serial = [model.run(b) for b in batches]

    def work(i: int) -> list[np.ndarray]:
        return [model.run(batches[i]) for _ in range(30)]

    for i, outs in enumerate(_together(N_THREADS, work)):
        for out in outs:
            np.testing.assert_array_equal(out, serial[i])


def test_dicom_scans_from_many_threads(tiny_model: Path, dicom_series: Callable[..., Path]) -> None:
    locator = L3Locator.load(tiny_model)
    scans = [dicom_series(f"s{i}", band_rows=(10 + 3 * i, 11 + 3 * i)) for i in range(4)]
    serial = [_comparable(locator.predict(s)) for s in scans]
    assert len({s["slice_index"] for s in serial}) == 4  # four different answers to mix up
    got = _together(8, lambda i: _comparable(locator.predict(scans[i % 4])))
    assert got == [serial[i % 4] for i in range(8)]
