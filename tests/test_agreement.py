"""Whole levels and stability under cropping (l3edge.agreement), the review they set (l3edge.place), and scans
of the bundled model that end inside L2, L3 and L4."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from l3edge import agreement
from l3edge.ladder import LADDER_LEVELS
from l3edge.place import PlacedLevel, Placement
from l3edge.preprocess import RowGrid

Z = np.linspace(
    0.0, -400.0, 201
)  # slices every 2 mm, superior first: the head end at 0, the foot end at -400
PITCH = 37.0  # L3's pitch; half its body (0.72 of the pitch) is 13.3 mm


def test_a_body_the_scan_end_cuts_is_not_whole() -> None:
    assert agreement.cut_end(-200.0, Z, PITCH) is None
    assert agreement.cut_end(-10.0, Z, PITCH) == "head"
    assert agreement.cut_end(-390.0, Z, PITCH) == "foot"
    assert agreement.cut_end(-14.0, Z, PITCH) is None  # 14 mm > 13.3 mm: the whole body is in view
    assert agreement.cut_end(-12.0, Z, PITCH) == "head"
    assert agreement.cut_end(-12.0, Z, 30.0) is None  # a smaller patient's shorter body is whole
    assert agreement.cut_end(10.0, Z, PITCH) == "head"  # centre beyond the end, the body's lower part in view
    assert agreement.cut_end(14.0, Z, PITCH) is None  # wholly beyond the head end
    assert agreement.cut_end(-410.0, Z, PITCH) == "foot" and agreement.cut_end(-414.0, Z, PITCH) is None


def test_crops_replace_one_end_by_the_padding() -> None:
    grid = RowGrid(z0_mm=40.0, mm_per_px=4.0)  # 10 rows of padding above the scan
    channels = np.ones((3, 130, 8), np.float32)
    fill = np.array([-1.0, -2.0, -3.0])
    crops = agreement.crop_images(channels, grid, Z, fill)
    assert set(crops) == {"head", "foot"}
    row_z = grid.row_to_z(np.arange(130))
    head, foot = crops["head"], crops["foot"]
    assert np.all(head[:, row_z > -40.0 + 1e-6] == fill[:, None, None])
    assert np.all(head[:, (row_z < -40.0) & (row_z > -400.0)] == 1.0)
    assert np.all(foot[:, row_z < -360.0 - 1e-6] == fill[:, None, None])
    assert np.all(foot[:, (row_z > -360.0) & (row_z < 0.0)] == 1.0)
    assert head.shape == channels.shape and np.all(channels == 1.0)  # the input is untouched
    assert agreement.crop_images(channels, grid, Z[:50], fill) == {}  # 98 mm: too short to crop


def test_a_crop_counts_only_where_it_keeps_the_level() -> None:
    # the head crop leaves the scan from -40 down: L3 must stay 13.3 + 10 mm inside it
    assert agreement.crop_keeps("head", -70.0, Z, PITCH)
    assert not agreement.crop_keeps("head", -60.0, Z, PITCH)
    assert agreement.crop_keeps("foot", -330.0, Z, PITCH)
    assert not agreement.crop_keeps("foot", -340.0, Z, PITCH)


def test_crop_shift_in_pitches_and_its_factor() -> None:
    assert math.isnan(agreement.crop_shift(-200.0, [], PITCH))
    assert agreement.crop_shift(-200.0, [-200.0, -203.7], PITCH) == pytest.approx(0.1)
    assert agreement.crop_shift(-200.0, [-200.0, None], PITCH) == math.inf
    assert agreement.crop_factor(math.nan) == 1.0
    assert agreement.crop_factor(0.0) == 1.0
    assert agreement.crop_factor(agreement.CROP_SD_PITCH) == pytest.approx(math.exp(-0.5))
    assert agreement.crop_factor(math.inf) == 0.0


def _placement(crop: float = 0.0, counted: bool = True) -> Placement:
    lv = PlacedLevel("L3", True, -200.0, 100, 0.95, 0.95, 0.99, "model", crop_shift_pitch=crop)
    return Placement({"L3": lv}, True, 0, counted=counted)


def test_review_when_a_crop_names_another_vertebra_or_nothing_can_be_counted() -> None:
    assert not _placement().review("L3", 0.5) and _placement().warnings("L3") == []
    for p in (_placement(0.6), _placement(math.inf)):
        assert p.review("L3", 0.5)
        assert any("L3 is unstable" in w for w in p.warnings("L3"))
    p = _placement(counted=False)
    assert p.review("L3", 0.5)
    assert any("could not be counted" in w for w in p.warnings("L3"))


# The bundled model on a phantom cropped in memory so that the scan ends inside a vertebra.


@pytest.fixture(scope="module")
def bundled():  # type: ignore[no-untyped-def]
    from l3edge.locator import L3Locator
    from l3edge.phantom.render import fast_projection

    proj, truth = fast_projection(3, region="cap")
    return L3Locator.load(), proj, truth.vertebrae


def _ending_inside(proj, level_z: float, end: str):  # type: ignore[no-untyped-def]
    """The projection cut 3 mm past the centre of a vertebra, at its foot or head end."""
    keep = proj.z_mm >= level_z - 3.0 if end == "foot" else proj.z_mm <= level_z + 3.0
    return replace(proj, mip_hu=proj.mip_hu[keep], z_mm=proj.z_mm[keep])


def test_the_bundled_model_finds_l3_on_the_whole_phantom(bundled) -> None:  # type: ignore[no-untyped-def]
    loc, proj, verts = bundled
    r = loc.predict_projection(proj)
    assert r.found and abs(r.z_mm - verts["L3"]["z_center"]) < 5.0
    assert set(r.levels) == set(LADDER_LEVELS)


@pytest.mark.parametrize(
    ("inside", "end", "level", "in_view"),
    [
        ("L2", "foot", "L2", {"T10", "T11", "T12", "L1"}),  # a chest CT that ends inside L2
        ("L3", "foot", "L3", {"T10", "T11", "T12", "L1", "L2"}),
        ("L3", "head", "L3", {"L4", "L5", "S1"}),  # a pelvis CT that starts inside L3
        ("L4", "foot", "L4", {"T10", "T11", "T12", "L1", "L2", "L3"}),
    ],
)
def test_a_scan_ending_inside_a_vertebra_does_not_report_it(
    bundled,  # type: ignore[no-untyped-def]
    inside: str,
    end: str,
    level: str,
    in_view: set[str],
) -> None:
    loc, proj, verts = bundled
    r = loc.predict_projection(_ending_inside(proj, verts[inside]["z_center"], end), level=level)
    assert not r.found and r.z_mm is None
    assert set(r.levels) == in_view  # every level wholly in view, and only those
    if inside == "L3" and end == "head":
        assert f"L3 is cut at the {end} end of the scan; reported not found" in r.warnings
    if inside == "L4":  # L3 itself is whole: still found, on its body
        l3 = loc.predict_projection(_ending_inside(proj, verts["L4"]["z_center"], end))
        assert l3.found and verts["L3"]["z_bottom"] <= l3.z_mm <= verts["L3"]["z_top"]


def test_a_lumbar_only_scan_cannot_be_counted(bundled) -> None:  # type: ignore[no-untyped-def]
    loc, proj, verts = bundled
    keep = (proj.z_mm <= verts["T12"]["z_bottom"] - 8.0) & (proj.z_mm >= verts["S1"]["z_top"] + 8.0)
    r = loc.predict_projection(replace(proj, mip_hu=proj.mip_hu[keep], z_mm=proj.z_mm[keep]))
    assert "T12" not in r.levels and "S1" not in r.levels
    assert r.found and r.review
    assert any("could not be counted from either end" in w for w in r.warnings)
