"""NIfTI reader: RAS -> LPS, same z and MIP as the DICOM of the same volume, layouts, bad files."""

from __future__ import annotations

import builtins
import gzip
from pathlib import Path

import numpy as np
import pytest

from l3edge.errors import InputError
from l3edge.scan import read_axial_slice, read_projection
from tests.dicom_factory import SX, SY, expected_mip, make_volume, write_nifti, write_series

pytest.importorskip("nibabel")


@pytest.mark.parametrize("layout", ["lps", "ras", "swap", "zflip"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_same_mip_and_z_as_dicom(tmp_path: Path, layout: str, suffix: str) -> None:
    hu = make_volume(nz=20)
    dcm = read_projection(write_series(tmp_path / "dcm", hu).folder)
    proj = read_projection(write_nifti(tmp_path / f"v{suffix}", hu, layout=layout))
    np.testing.assert_array_equal(proj.mip_hu, expected_mip(hu))
    np.testing.assert_array_equal(proj.mip_hu, dcm.mip_hu)
    np.testing.assert_allclose(proj.z_mm, dcm.z_mm)
    assert proj.col_spacing_mm == pytest.approx(SX)
    info = proj.series
    assert info.source == "nifti" and info.slice_files == () and info.series_instance_uid is None
    expected_index = tuple(range(20)) if layout == "zflip" else tuple(range(19, -1, -1))
    assert info.slice_index == expected_index
    np.testing.assert_array_equal(read_axial_slice(info, 0), hu[-1].astype(np.float32))


def test_4d_singleton_is_squeezed(tmp_path: Path) -> None:
    hu = make_volume(nz=5)
    proj = read_projection(write_nifti(tmp_path / "v.nii", hu, ndim=4))
    np.testing.assert_array_equal(proj.mip_hu, expected_mip(hu))


def test_rejects_2d_4d_broken_and_non_axial(tmp_path: Path) -> None:
    import nibabel as nib

    with pytest.raises(InputError, match="2D"):
        read_projection(write_nifti(tmp_path / "flat.nii", make_volume(nz=5), ndim=2))
    four = nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4))
    nib.save(four, tmp_path / "four.nii")
    with pytest.raises(InputError, match="4D"):
        read_projection(tmp_path / "four.nii")
    (tmp_path / "broken.nii").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="not a readable NIfTI"):
        read_projection(tmp_path / "broken.nii")
    with gzip.open(tmp_path / "trunc.nii.gz", "wb") as f:
        f.write((tmp_path / "four.nii").read_bytes()[:600])
    with pytest.raises(InputError, match="trunc.nii.gz"):
        read_projection(tmp_path / "trunc.nii.gz")
    sag = np.array([[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), sag), tmp_path / "sag.nii")
    with pytest.raises(InputError, match="third axis"):
        read_projection(tmp_path / "sag.nii")


def test_series_option_rejected_for_nifti(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "v.nii", make_volume(nz=3))
    with pytest.raises(InputError, match="--series"):
        read_projection(path, series_uid="1.2.3")


def test_missing_nibabel_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_nifti(tmp_path / "v.nii", make_volume(nz=3))
    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):
        if name == "nibabel" or name.startswith("nibabel."):
            raise ImportError("No module named 'nibabel'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match=r'pip install "l3edge\[nifti\]"'):
        read_projection(path)


def test_y_spacing_is_not_used_for_columns(tmp_path: Path) -> None:
    proj = read_projection(write_nifti(tmp_path / "v.nii.gz", make_volume(nz=3), layout="swap"))
    assert proj.col_spacing_mm == pytest.approx(SX) and SX != SY
