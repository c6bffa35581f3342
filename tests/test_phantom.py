"""Synthetic CT phantoms: determinism, truth vs geometry, writers round trip, variants, fast-path parity."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pydicom
import pytest

from l3edge.errors import UsageError
from l3edge.metadata import ModelSpace
from l3edge.phantom import (
    REGIONS,
    Truth,
    build_anatomy,
    fast_projection,
    project_full,
    render_slices,
    sample_config,
    write_phantom,
)
from l3edge.phantom.render import paint_plane, render_slice
from l3edge.preprocess import to_model_space

SMALL = {"matrix": 128, "pixel_spacing_mm": 3.2, "slice_spacing_mm": 5.0, "slice_thickness_mm": 5.0}
SPACE = ModelSpace(
    4.0, 80, 64, ((100.0, 1500.0),) * 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), -1024.0, 40
)
HAVE_READER = importlib.util.find_spec("l3edge.scan") is not None


def _model_space(proj) -> tuple[np.ndarray, float]:
    img, grid = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, SPACE)
    return np.clip(img, 100, 1500), grid.z0_mm


def test_sampling_is_deterministic_and_covers_regions() -> None:
    assert sample_config(5) == sample_config(5)
    assert sample_config(5) != sample_config(6)
    assert {sample_config(s).region for s in range(100)} == set(REGIONS)
    a, ta = fast_projection(7)
    b, tb = fast_projection(7)
    np.testing.assert_array_equal(a.mip_hu, b.mip_hu)
    assert ta == tb
    with pytest.raises(UsageError):
        sample_config(1, no_such_option=3)
    with pytest.raises(UsageError):
        sample_config(1, region="head")


def test_truth_matches_the_volume() -> None:
    cfg = sample_config(
        11, "abdomen", matrix=256, pixel_spacing_mm=1.6, bone_density=1.0, noise_sd_hu=0.0, scoliosis_mm=12.0
    )
    anat = build_anatomy(cfg)
    truth = anat.truth()
    assert truth.l3_in_view and truth.l3_z_mm == pytest.approx(anat.spine.by_name("L3").z_center, abs=1e-3)
    coords = anat.x_coords()
    for name in ("L2", "L3", "L4"):
        lv = anat.spine.by_name(name)
        r, c = np.argmin(np.abs(coords - lv.y)), np.argmin(np.abs(coords - lv.x))
        v = truth.vertebrae[name]
        assert v["z_top"] > v["z_center"] > v["z_bottom"] and v["in_view"]
        assert paint_plane(anat, v["z_center"])[r, c] >= 140  # cancellous bone at the body centre
        z_disc_above = 0.5 * (v["z_top"] + truth.vertebrae[f"L{int(name[1]) - 1}"]["z_bottom"])
        assert paint_plane(anat, z_disc_above)[r, c] < 100  # the disc above is not bone
    # levels run superior -> inferior with L3 the third below the last rib-bearing vertebra
    names = list(truth.vertebrae)
    assert names.index("L3") - names.index("T12") == 3 and names[-1] == "S1"


@pytest.mark.parametrize(
    ("override", "label", "check"),
    [
        ({"n_ribs": 11}, "ribs11", lambda t: "T11" in t.vertebrae and "T12" not in t.vertebrae),
        ({"n_ribs": 13}, "ribs13", lambda t: "T13" in t.vertebrae),
        ({"n_lumbar": 4}, "lumbar4_sacralised_l5", lambda t: "L4" in t.vertebrae and "L5" not in t.vertebrae),
        ({"n_lumbar": 6}, "lumbar6", lambda t: "L6" in t.vertebrae),
        ({"scoliosis_mm": 20.0}, "scoliosis", None),
        ({"bone_density": 0.5}, "osteoporosis", None),
        ({"iv_contrast": True}, "iv_contrast", None),
        ({"oral_contrast": True}, "oral_contrast", None),
        ({"spinal_hardware": True}, "spinal_hardware", lambda t: True),
        ({"hip_prosthesis": "left"}, "hip_prosthesis_left", None),
        ({"arms": "up"}, "arms_up", None),
        ({"table_rails": True}, "table_rails", None),
    ],
)
def test_every_variant_can_be_forced(override, label, check) -> None:
    proj, truth = fast_projection(3, 4.0, region="cap", beam_hardening=0.0, **override)  # BH dims metal
    assert label in truth.variants
    if check is not None:
        assert check(truth)
    names = list(truth.vertebrae)
    last_t = max(i for i, n in enumerate(names) if n.startswith("T"))
    assert names[last_t + 3] == "L3"
    if override.get("spinal_hardware") or override.get("hip_prosthesis"):
        assert proj.mip_hu.max() >= 2900  # metal


def test_regions_put_l3_where_they_say() -> None:
    for s in range(6):
        assert not fast_projection(s, 4.0, region="chest")[1].l3_in_view
        t = fast_projection(s, 4.0, region="abdomen")[1]
        assert t.l3_in_view and t.scan_z_range[0] < t.vertebrae["S1"]["z_center"]
        for region in ("l3_top", "l3_bottom"):
            t = fast_projection(s, 4.0, region=region)[1]
            lo, hi = t.scan_z_range
            edge = hi if region == "l3_top" else lo
            assert abs(t.l3_z_true_mm - edge) <= 40.0


def test_truth_json_round_trip() -> None:
    _, t = fast_projection(9, 4.0)
    back = Truth.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back.to_dict() == json.loads(json.dumps(t.to_dict()))
    assert isinstance(back.scan_z_range, tuple)


def test_render_slices_geometry_and_order() -> None:
    cfg = sample_config(4, "l3_top", **SMALL)
    zs = [z for z, _ in render_slices(cfg)]
    assert np.all(np.diff(zs) < 0)
    first = next(iter(render_slices(cfg, order="feet")))
    assert first[0] == pytest.approx(zs[-1]) and first[1].shape == (128, 128)
    assert first[1].dtype == np.float32


def test_dicom_headers_and_variants_of_writing(tmp_path) -> None:
    t = write_phantom(
        tmp_path / "a",
        2,
        region="l3_bottom",
        transfer_syntax="rle",
        shuffle_names=True,
        extensionless=True,
        instance_order="feet",
        **SMALL,
    )
    files = [f for f in (tmp_path / "a").iterdir() if f.name != "truth.json"]
    assert len(files) == t.n_slices and all(f.suffix == "" for f in files)
    ds = pydicom.dcmread(sorted(files)[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"] and str(ds.PatientName) == "PHANTOM^ANON"
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    by_inst = {
        int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber): float(
            pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]
        )
        for f in files
    }
    assert by_inst[1] == pytest.approx(t.scan_z_range[0])  # instance 1 at the feet
    t2 = write_phantom(
        tmp_path / "b", 2, region="l3_bottom", transfer_syntax="implicit", signed=True, **SMALL
    )
    assert t2.vertebrae == t.vertebrae
    ds2 = pydicom.dcmread(sorted((tmp_path / "b").glob("*.dcm"))[0])
    assert ds2.PixelRepresentation == 1 and ds2.pixel_array.min() == -2048


@pytest.mark.skipif(not HAVE_READER, reason="reader not available")
def test_dicom_and_nifti_round_trip(tmp_path) -> None:
    pytest.importorskip("nibabel")
    from l3edge.scan import read_projection

    cfg = sample_config(1, "abdomen", **SMALL)
    ref = project_full(cfg)
    t = write_phantom(tmp_path / "d", 1, "dicom", config=cfg, transfer_syntax="jpeg2000")
    write_phantom(tmp_path / "n", 1, "nifti", config=cfg)
    pd = read_projection(tmp_path / "d")
    pn = read_projection(tmp_path / "n" / "phantom.nii.gz")
    np.testing.assert_allclose(pd.z_mm, ref.z_mm, atol=1e-3)
    np.testing.assert_allclose(pn.z_mm, pd.z_mm, atol=1e-3)
    assert pd.z_mm[0] == pytest.approx(t.scan_z_range[1], abs=1e-3)
    expect = np.clip(np.rint(ref.mip_hu), -1024, 3071)
    np.testing.assert_array_equal(pd.mip_hu, expect)
    np.testing.assert_array_equal(pn.mip_hu, expect)
    assert pd.col_spacing_mm == pytest.approx(3.2) and pn.col_spacing_mm == pytest.approx(3.2, abs=1e-5)


@pytest.mark.parametrize(
    ("seed", "extra"), [(21, {}), (22, {}), (23, {"streaks": 4, "streak_hu": 300.0, "beam_hardening": 0.2})]
)
def test_fast_path_matches_full_render(seed: int, extra: dict) -> None:
    base = sample_config(
        seed,
        "abdomen",
        matrix=256,
        pixel_spacing_mm=1.6,
        slice_spacing_mm=2.5,
        slice_thickness_mm=2.5,
        noise_sd_hu=0.0,
        iv_contrast=True,
        **extra,
    )
    lv = build_anatomy(base).spine.by_name("L3")
    cfg = base.with_overrides(scan_z_range=(lv.z_center - 120, lv.z_center + 120))
    full, _ = _model_space(project_full(cfg))
    fast_proj, truth = fast_projection(cfg, 2.0)
    fast, _ = _model_space(fast_proj)
    assert full.shape == fast.shape
    assert np.abs(full - fast).mean() < 25.0  # HU, [100, 1500] clipped, 4 mm/px (typically 8-15)


def test_runtime_side_never_imports_torch() -> None:
    import subprocess

    code = "import sys, l3edge.phantom as p; p.fast_projection(0, 4.0); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- generator 0.4: realism where the real scans were missed ---

QUIET = {"noise_sd_hu": 0.0, "streaks": 0, "beam_hardening": 0.0, "rotation_deg": 0.0, "lean_deg": 0.0}


def _col(proj, x_mm: float) -> int:
    n = proj.mip_hu.shape[1]
    return int(np.argmin(np.abs((np.arange(n) - (n - 1) / 2) * proj.col_spacing_mm - x_mm)))


def _row(proj, z_mm: float) -> int:
    return int(np.argmin(np.abs(proj.z_mm - z_mm)))


def test_generator_version_is_recorded() -> None:
    from l3edge.phantom import GENERATOR_VERSION

    assert GENERATOR_VERSION == "0.4"
    assert fast_projection(2, 4.0)[1].generator == "0.4"
    old = fast_projection(2, 4.0)[1].to_dict()
    del old["generator"]  # a truth.json written before 0.4
    assert Truth.from_dict(old).generator == ""


@pytest.mark.parametrize("seed", [0, 5, 12])
def test_iliac_wing_is_a_shell_with_a_bright_rim(seed: int) -> None:
    from l3edge.phantom.pelvis import crest_top_z

    cfg = sample_config(seed, "abdomen", crest_asym_mm=0.0, **QUIET)
    anat = build_anatomy(cfg)
    proj, _ = fast_projection(cfg, 2.0)
    s1 = anat.spine.by_name("S1")
    pw = cfg.skeleton_scale * cfg.pelvis_width * (0.9 + 0.1 * cfg.body_width_scale)
    top = crest_top_z(anat.spine, cfg)
    for sg in (-1.0, 1.0):
        col = proj.mip_hu[:, _col(proj, s1.x + sg * 85 * pw)]
        rim = col[_row(proj, top + 2) : _row(proj, top - 12)].max()
        interior = np.median(col[_row(proj, top - 25) : _row(proj, top - 45)])
        assert rim > 1.4 * interior and interior > 150, (rim, interior)


def test_contrast_fills_the_disc_gaps_over_the_spine() -> None:
    gaps = {}
    for phase in ("none", "portal", "arterial"):
        kw = {"iv_contrast": phase != "none", "contrast_phase": phase if phase != "none" else "portal"}
        cfg = sample_config(17, "abdomen", aorta_offset_mm=4.0, contrast_scale=1.0, **QUIET, **kw)
        anat = build_anatomy(cfg)
        proj, t = fast_projection(cfg, 2.0)
        l2 = anat.spine.by_name("L2")
        r = _row(proj, 0.5 * (t.vertebrae["L2"]["z_bottom"] + t.vertebrae["L3"]["z_top"]))
        cols = slice(_col(proj, l2.x - 0.5 * l2.half_width), _col(proj, l2.x + 0.5 * l2.half_width) + 1)
        gaps[phase] = float(np.median(proj.mip_hu[r, cols]))
    assert gaps["none"] < 110  # a dark disc gap without contrast
    assert gaps["portal"] > gaps["none"] + 40 and gaps["arterial"] > gaps["portal"] + 30, gaps


def _shadow_hits(prims, x: np.ndarray, z: np.ndarray) -> bool:
    X, Z = np.meshgrid(x, z)
    return any(bool(p.shadow_mask(X, Z).any()) for p in prims)


@pytest.mark.parametrize("seed", [0, 3])
def test_spine_region_is_a_narrow_field_without_ribs(seed: int) -> None:
    import dataclasses

    small = {"matrix": 128, "slice_spacing_mm": 3.0, "slice_thickness_mm": 3.0, "noise_sd_hu": 0.0}
    cfg = sample_config(seed, "spine")
    fov = cfg.matrix * cfg.pixel_spacing_mm
    assert 130 <= fov <= 180
    cfg = cfg.with_overrides(pixel_spacing_mm=fov / 128, **small)
    anat = build_anatomy(cfg)
    l3 = anat.spine.by_name("L3")
    assert abs(l3.x) < 20 and abs(l3.y) < 25  # the reconstruction is centred on the spine
    t = anat.truth()
    assert t.l3_in_view and t.vertebrae["L4"]["in_view"] and not t.vertebrae["T12"]["in_view"]
    assert anat.rib_index  # the patient has ribs, only not in this field of view
    ribless = set(anat.rib_index)
    prims = tuple(p for i, p in enumerate(anat.primitives) if i not in ribless)
    keep = [i for i in range(len(anat.primitives)) if i not in ribless]
    no_ribs = dataclasses.replace(anat, primitives=prims, z_lo=anat.z_lo[keep], z_hi=anat.z_hi[keep])
    for z in anat.slice_z[:: max(1, anat.slice_z.size // 12)]:  # full render: the exact circular FOV
        np.testing.assert_array_equal(render_slice(anat, float(z)), render_slice(no_ribs, float(z)))
    fast, _ = fast_projection(cfg, 2.0)
    assert fast.mip_hu.shape[1] * 2.0 <= fov + 2.0


def test_new_options_leave_the_truth_alone() -> None:
    base = fast_projection(8, 4.0, region="abdomen")[1]
    forced = {
        "streaks": 6,
        "streak_hu": 400.0,
        "beam_hardening": 0.25,
        "table_edge_hu": 600.0,
        "contrast_scale": 1.4,
        "aorta_offset_mm": 0.0,
        "iv_contrast": True,
        "contrast_phase": "arterial",
    }
    t = fast_projection(8, 4.0, region="abdomen", **forced)[1]
    assert t.vertebrae == base.vertebrae and t.l3_z_mm == base.l3_z_mm
    assert t.scan_z_range == base.scan_z_range
    cut = fast_projection(8, 4.0, region="abdomen", cut_level="L3", cut_end="bottom", cut_frac=0.3)[1]
    zs = {k: (v["z_top"], v["z_bottom"]) for k, v in cut.vertebrae.items()}
    assert zs == {k: (v["z_top"], v["z_bottom"]) for k, v in base.vertebrae.items()}
    l3 = base.vertebrae["L3"]
    z_cut = l3["z_top"] - 0.3 * (l3["z_top"] - l3["z_bottom"])
    assert 0 <= cut.scan_z_range[0] - z_cut < cut.slice_spacing_mm + 1e-3  # the last slice at the cut
    assert not cut.l3_in_view and cut.vertebrae["L2"]["in_view"] and "cut_bottom_L3" in cut.variants
    top = fast_projection(8, 4.0, region="abdomen", cut_level="L4", cut_end="top", cut_frac=0.6)[1]
    assert not top.l3_in_view and top.vertebrae["L4"]["in_view"] is False and top.vertebrae["L5"]["in_view"]
    with pytest.raises(UsageError):
        fast_projection(8, 4.0, region="abdomen", cut_level="L7")
    with pytest.raises(UsageError):
        fast_projection(8, 4.0, region="abdomen", cut_level="L3", cut_end="middle")


def test_new_variety_is_deterministic_by_seed() -> None:
    for s in (67, 125):  # drawn as lumbar spine CTs
        assert sample_config(s).region == "spine" and sample_config(s) == sample_config(s)
        a, b = fast_projection(s, 2.0)[0], fast_projection(s, 2.0)[0]
        np.testing.assert_array_equal(a.mip_hu, b.mip_hu)
    drawn = [sample_config(s) for s in range(200)]
    assert any(c.streaks for c in drawn) and any(c.beam_hardening > 0 for c in drawn)
    assert any(c.cut_level for c in drawn) and any(c.table_edge_hu > 0 for c in drawn)
    assert len({round(c.contrast_scale, 3) for c in drawn}) > 100


def test_streaks_and_beam_hardening_show_in_the_mip() -> None:
    cfg = sample_config(4, "abdomen", **QUIET)
    plain = fast_projection(cfg, 2.0)[0].mip_hu
    streaky = fast_projection(cfg.with_overrides(streaks=4, streak_hu=300.0), 2.0)[0].mip_hu
    rows = (streaky - plain).max(axis=1)
    assert 1 <= int((rows > 100).sum()) <= 4 * 8 and float((streaky - plain).min()) >= -1e-3
    hard = fast_projection(cfg.with_overrides(beam_hardening=0.25), 2.0)[0]
    anat = build_anatomy(cfg)
    l3 = anat.spine.by_name("L3")
    r, c = _row(hard, l3.z_center), _col(hard, l3.x)
    assert hard.mip_hu[r, c] < plain[r, c] - 50  # the spine at the centre of the body loses HU
