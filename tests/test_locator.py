"""L3Locator end to end on in-memory projections and (when the reader exists) synthetic DICOM series."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l3edge.errors import ModelError, UsageError
from l3edge.locator import L3Locator, locate
from l3edge.metadata import ModelMetadata
from l3edge.postprocess import RampFit
from l3edge.preprocess import normalize, to_model_space
from l3edge.refine import refine_rows
from l3edge.result import L3Result, LevelResult
from l3edge.sliding import predict_strip, predict_windows
from tests.tiny_model import (
    TINY_SPACE,
    band_projection,
    save_tiny_model,
    tiny_metadata,
    tiny_refiner_metadata,
)

needs_reader = pytest.mark.skipif(
    importlib.util.find_spec("l3edge.scan") is None, reason="l3edge.scan (the reader) is not written yet"
)

Factory = Callable[..., Path]


@pytest.fixture(scope="module")
def locator(tiny_model: Path) -> L3Locator:
    return L3Locator.load(tiny_model, inference_precision="f32")


def test_finds_the_band(locator: L3Locator) -> None:
    proj = band_projection((20, 21))
    r = locator.predict_projection(proj)
    band_z = float(proj.z_mm[[20, 21]].mean())
    assert r.found and r.error is None
    assert abs(r.z_mm - band_z) < 3.0
    assert r.slice_z_mm in (proj.z_mm[20], proj.z_mm[21])
    row = int(np.flatnonzero(proj.z_mm == r.slice_z_mm)[0])
    assert r.slice_index == proj.series.slice_index[row] == proj.n_slices - 1 - row
    assert r.instance_number == proj.series.instance_numbers[row]
    assert r.n_slices == 40 and r.confidence > 0.9 and r.ramp_r > 0.99
    assert set(r.timings_ms) >= {"read_mip", "preprocess", "cnn", "postprocess", "total"}
    assert r.model == {"name": "tiny-band", "version": "0.0.1"}
    json.dumps(r.to_dict(), allow_nan=False)


def test_absent(locator: L3Locator) -> None:
    r = locator.predict_projection(band_projection(None))
    assert not r.found and r.error is None
    assert r.z_mm is None and r.slice_index is None and r.instance_number is None
    assert r.presence < 0.1


def test_level_in_the_padding_is_not_found(locator: L3Locator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Row 2 lies in the 16 rows of fill added above the scan: the model saw L3 beyond the scan's top.
    monkeypatch.setattr("l3edge.ladder.fit_ramp", lambda *a: RampFit(True, 2.0, 0.9, 1.0, 0.9, 10))
    r = locator.predict_projection(band_projection())
    assert not r.found and r.z_mm is None and r.slice_index is None
    assert any("outside the scan" in w for w in r.warnings)


def test_strip_equals_window_for_padding_free_model(tiny_model: Path) -> None:
    strip = L3Locator.load(tiny_model, mode="strip", inference_precision="f32")
    window = L3Locator.load(tiny_model, mode="window", inference_precision="f32")
    proj = band_projection((17, 18, 19))
    image, _ = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, TINY_SPACE)
    ch = normalize(image, TINY_SPACE)
    for stride in (1, 4, 16, 32):
        t1, p1 = predict_strip(strip.model.run, ch, 32, stride, 16)
        t2, p2 = predict_windows(window.model.run, ch, 32, stride)
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_allclose(p1, p2, atol=1e-4)
    a, b = strip.predict_projection(proj), window.predict_projection(proj)
    assert a.z_mm == pytest.approx(b.z_mm, abs=1e-3) and a.slice_index == b.slice_index


def test_padded_model_still_finds_the_band(tiny_model_padded: Path) -> None:
    proj = band_projection((20, 21))
    for mode in ("strip", "window"):
        r = L3Locator.load(tiny_model_padded, mode=mode).predict_projection(proj)
        assert r.found and abs(r.z_mm - proj.z_mm[[20, 21]].mean()) < 4.0


def test_per_window_model(tmp_path: Path) -> None:
    xml = save_tiny_model(tmp_path / "win.xml", output_stride=None)
    loc = L3Locator.load(xml)
    assert not loc._strip_mode(loc.stride)
    assert loc.predict_projection(band_projection()).found
    with pytest.raises(UsageError, match="strip"):
        L3Locator.load(xml, mode="strip")


def test_bad_stride_and_mode(tiny_model: Path) -> None:
    with pytest.raises(UsageError, match="stride"):
        L3Locator.load(tiny_model, mode="strip", stride=5)
    with pytest.raises(UsageError, match="mode"):
        L3Locator.load(tiny_model, mode="fast")
    # auto falls back to windows for a stride the strip path cannot do
    loc = L3Locator.load(tiny_model, stride=5)
    assert loc.predict_projection(band_projection()).found


def test_qa_picture(locator: L3Locator, tmp_path: Path) -> None:
    r = locator.predict_projection(band_projection(), qa_dir=tmp_path / "qa", path="scan one")
    assert r.qa_path is not None and Path(r.qa_path).parent == tmp_path / "qa"
    img = Image.open(r.qa_path)
    assert img.format == "PNG" and img.mode == "RGB"
    assert np.any(np.all(np.asarray(img) == (255, 40, 40), axis=-1))  # the line at L3
    r2 = locator.predict_projection(band_projection(None), qa_dir=tmp_path / "qa", path="other")
    assert Path(r2.qa_path).is_file() and r2.qa_path != r.qa_path


def test_failure_result() -> None:
    r = L3Result.failure("x", "cannot read")
    d = r.to_dict()
    assert d["error"] == "cannot read" and d["found"] is False and d["z_mm"] is None and not r.ok


@needs_reader
def test_predict_dicom_series(tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> None:
    folder = dicom_series("scan", band_rows=(20, 21))
    r = locate(folder, model=tiny_model, qa_dir=tmp_path / "qa")
    assert r.found and r.n_slices == 40 and r.series_instance_uid
    assert r.slice_index in (39 - 20, 39 - 21)  # z-ascending index of superior-first rows 20, 21
    assert r.instance_number in (21, 22) and r.sop_instance_uid
    assert abs(r.z_mm - (-100 - 5 * 20.5)) < 3.0
    assert Path(r.qa_path).is_file()


@needs_reader
def test_predict_nifti(tiny_model: Path, tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    vol = np.full((64, 64, 40), -1000, np.int16)  # RAS, third axis feet -> head
    vol[:, 28:36, 18:20] = 1000  # a bright band on slices k = 18, 19
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    path = tmp_path / "band.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), path)
    r = L3Locator.load(tiny_model).predict(path, qa_dir=tmp_path / "qa")
    assert r.found and r.n_slices == 40 and r.series_instance_uid is None and r.instance_number is None
    assert r.slice_index in (18, 19)  # index along the file's third axis
    assert abs(r.z_mm - 5 * 18.5) < 3.0
    assert Path(r.qa_path).is_file()


def _with_refiner(folder: Path, bias: float, refiner_meta: ModelMetadata | None = None) -> Path:
    """A tiny main model naming a tiny refiner (the band detector at 1 mm/px, its offset + ``bias`` px)."""
    refiner = refiner_meta or tiny_refiner_metadata()
    save_tiny_model(folder / "refiner.xml", metadata=refiner, offset_bias=bias)
    return save_tiny_model(folder / "main.xml", metadata=replace(tiny_metadata(), refiner="refiner.xml"))


def test_refiner_moves_the_estimate(tmp_path: Path) -> None:
    xml = _with_refiner(tmp_path, bias=3.0)
    proj = band_projection((20, 21), spacing_mm=2.0)
    band_z = float(proj.z_mm[[20, 21]].mean())
    plain = L3Locator.load(xml, inference_precision="f32", refine=False)
    assert plain.refiner is None
    refining = L3Locator.load(xml, inference_precision="f32")
    assert refining.refiner is not None and refining.refiner.metadata.is_refiner
    a, b = plain.predict_projection(proj), refining.predict_projection(proj)
    assert a.found and b.found and "refine" in b.timings_ms and "refine" not in a.timings_ms
    # The refiner finds the band's centre at 1 mm/px and adds 3 rows; rows run head -> feet: 3 mm lower.
    assert abs(b.z_mm - (band_z - 3.0)) < 0.3
    assert abs(a.z_mm - band_z) < 3.0


def test_refiner_outside_its_band_leaves_the_estimate(tmp_path: Path) -> None:
    xml = _with_refiner(tmp_path, bias=20.0)  # every offset lands beyond 3/4 of the window
    proj = band_projection((20, 21), spacing_mm=2.0)
    a = L3Locator.load(xml, inference_precision="f32", refine=False).predict_projection(proj)
    b = L3Locator.load(xml, inference_precision="f32").predict_projection(proj)
    assert b.found and b.z_mm == a.z_mm


def test_refiner_missing_or_not_a_refiner(tmp_path: Path) -> None:
    xml = _with_refiner(tmp_path, bias=0.0, refiner_meta=replace(tiny_metadata(), name="not-a-refiner"))
    with pytest.raises(ModelError, match="not a refiner"):
        L3Locator.load(xml)
    (tmp_path / "refiner.xml").unlink()
    with pytest.raises(ModelError, match="does not exist"):
        L3Locator.load(xml)
    assert L3Locator.load(xml, refine=False).refiner is None


def test_refine_rows_median_of_agreeing_windows_in_one_batch() -> None:
    channels = np.zeros((3, 100, 16), np.float32)
    # estimate 50: the middle window disagrees (beyond 3/4 of 32 rows); estimate 20: none agrees
    offsets = iter([np.array([16.0, 30.0, 17.0, 2.0, 1.0, 0.5])])
    sizes = []

    def run(batch: np.ndarray) -> np.ndarray:
        sizes.append(batch.shape[0])
        return np.stack([next(offsets), np.zeros(6)], axis=1).reshape(6, 2, 1, 1)

    a, b = refine_rows(run, channels, [50.0, 20.0], 32, (0.25, 0.75), np.array([-4, 0, 4]))
    # tops 30, 34, 38: estimates 46 and 55 agree, median 50.5
    assert sizes == [6] and a is not None and a[1] == 2 and a[0] == pytest.approx(50.5)
    assert b is None
    assert refine_rows(run, np.zeros((3, 10, 16), np.float32), [5.0], 32, (0.25, 0.75), np.array([0])) == [
        None
    ]


@pytest.mark.parametrize("col_mm", [0.3, 0.7, 2.0, 6.0])
def test_model_space_resamples_only_the_columns_it_needs(col_mm: float) -> None:
    from l3edge.preprocess import RowGrid, box_resample

    rng = np.random.default_rng(1)
    mip = rng.normal(0, 500, (50, 200)).astype(np.float32)
    z = -np.cumsum(rng.uniform(0.5, 3.0, 50))
    got, grid = to_model_space(mip, z, col_mm, TINY_SPACE)
    # Reference: every column resampled along z, then across.
    p, w = TINY_SPACE.mm_per_px, TINY_SPACE.window_width_px
    dst_z = np.asarray(RowGrid(grid.z0_mm, p).row_to_z(np.arange(got.shape[0])))
    rows = box_resample(mip[::-1], z[::-1], dst_z[::-1], p, TINY_SPACE.fill_hu, axis=0)[::-1]
    src_x = (np.arange(200) - 99.5) * col_mm
    ref = box_resample(rows, src_x, (np.arange(w) - (w - 1) / 2) * p, p, TINY_SPACE.fill_hu, axis=1)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_multilevel_model_reports_every_level_and_any_one(tmp_path: Path) -> None:
    from tests.tiny_model import MULTI_SHIFTS, save_tiny_multilevel_model

    xml = save_tiny_multilevel_model(tmp_path / "levels.xml")
    loc = L3Locator.load(xml, inference_precision="f32")
    proj = band_projection((20, 21), n_slices=60)
    band_z = float(proj.z_mm[[20, 21]].mean())
    r = loc.predict_projection(proj)
    assert r.level == "L3" and r.found and abs(r.z_mm - band_z) < 3.0
    assert set(r.levels) == {"L2", "L3", "L4"}
    assert r.levels["L3"]["z_mm"] == r.z_mm and r.levels["L3"]["slice_index"] == r.slice_index
    # L2 lies 8.8 rows of 4 mm above the band, L4 9.2 rows below it
    assert abs(r.levels["L2"]["z_mm"] - (band_z + 4.0 * -MULTI_SHIFTS[0])) < 3.0
    assert abs(r.levels["L4"]["z_mm"] - (band_z - 4.0 * MULTI_SHIFTS[2])) < 3.0
    assert r.levels["L2"]["z_mm"] > r.z_mm > r.levels["L4"]["z_mm"]
    l4 = loc.predict_projection(proj, level="l4")
    assert l4.level == "L4" and l4.z_mm == r.levels["L4"]["z_mm"] and l4.levels == r.levels
    with pytest.raises(UsageError, match="places L2, L3, L4"):
        loc.predict_projection(proj, level="T12")
    assert "review" in r.to_dict() and isinstance(r.review, bool)


def _level(z_mm: float) -> LevelResult:
    return LevelResult(z_mm, z_mm, None, None, None, 0.9)


def test_qa_picture_marks_the_levels_and_review(tmp_path: Path) -> None:
    from l3edge.qa import render_qa

    proj = band_projection((20, 21), n_slices=60)
    base = L3Result.failure("scan", "x")
    res = replace(
        base,
        error=None,
        found=True,
        z_mm=float(proj.z_mm[20]),
        confidence=0.9,
        levels={"L2": _level(float(proj.z_mm[10])), "L3": _level(float(proj.z_mm[20]))},
    )
    plain = np.asarray(render_qa(proj, res).convert("RGB"))
    flagged = np.asarray(render_qa(proj, replace(res, review=True)).convert("RGB"))
    # the L2 tick is drawn in the tick colour at its row; "REVIEW" adds red pixels to the note line
    assert (np.abs(plain.astype(int) - (80, 200, 255)).sum(-1) < 60).any()
    red = lambda a: ((a[..., 0] > 200) & (a[..., 1] < 80) & (a[..., 2] < 80))[:18].sum()  # noqa: E731
    assert red(flagged) > red(plain)
    assert isinstance(render_qa(proj, base), Image.Image)


def test_mirror_and_mip_in_one_batch_equal_separate_runs(tiny_model_padded: Path) -> None:
    from l3edge.sliding import predict_images

    loc = L3Locator.load(tiny_model_padded, inference_precision="f32")
    proj = band_projection((17, 18, 19))
    image, _ = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, TINY_SPACE)
    ch = normalize(image, TINY_SPACE)
    ch[..., :3] += 0.5  # make the mirror differ
    mirrored = np.ascontiguousarray(ch[..., ::-1])
    for stride in (4, 16, 32):
        tops, (a, b) = predict_images(loc.model.run, [ch, mirrored], 32, stride, 16)
        t1, p1 = predict_strip(loc.model.run, ch, 32, stride, 16)
        t2, p2 = predict_strip(loc.model.run, mirrored, 32, stride, 16)
        np.testing.assert_array_equal(tops, t1)
        np.testing.assert_array_equal(tops, t2)
        np.testing.assert_allclose(a, p1, atol=1e-5)
        np.testing.assert_allclose(b, p2, atol=1e-5)
