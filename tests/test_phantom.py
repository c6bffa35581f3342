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
from l3edge.phantom.render import paint_plane
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


@pytest.mark.parametrize("seed", [21, 22])
def test_fast_path_matches_full_render(seed: int) -> None:
    base = sample_config(
        seed,
        "abdomen",
        matrix=256,
        pixel_spacing_mm=1.6,
        slice_spacing_mm=2.5,
        slice_thickness_mm=2.5,
        noise_sd_hu=0.0,
        iv_contrast=True,
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
