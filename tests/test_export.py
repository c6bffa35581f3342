"""--export: the chosen slice handed on byte for byte (DICOM, from a folder or a zip), as a 2D NIfTI with its
affine (NIfTI input), with neighbours and a PNG; an interrupted export leaves no partial file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from l3edge import export as export_mod
from l3edge.export import scan_name
from l3edge.locator import L3Locator
from tests.conftest import write_band_series


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> L3Locator:
    return L3Locator.load(tiny_model, inference_precision="f32")


def _by_sop(folder: Path) -> dict[str, Path]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in folder.iterdir()}


def test_scan_name() -> None:
    assert scan_name("/data/patient 7/") == "patient_7"
    assert scan_name("exports/study.ZIP") == "study"
    assert scan_name("ct.nii.gz") == "ct" and scan_name("ct.nii") == "ct"


def test_dicom_slice_exported_byte_for_byte(tiny: L3Locator, tmp_path: Path) -> None:
    scan = write_band_series(tmp_path / "scan1")
    r = tiny.predict(scan, export_dir=tmp_path / "out", export_neighbours=2)
    assert r.found and r.export_path is not None
    exported = Path(r.export_path)
    source = _by_sop(scan)[r.sop_instance_uid]
    assert exported.parent == tmp_path / "out" / "scan1" and exported.name == source.name
    assert exported.read_bytes() == source.read_bytes()
    files = sorted(p for p in exported.parent.iterdir() if p.suffix != ".png")
    assert len(files) == 5  # the slice and 2 on each side
    by_sop = _by_sop(scan)
    for f in files:
        sop = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        assert f.read_bytes() == by_sop[sop].read_bytes() and f.name == by_sop[sop].name
    png = Image.open(exported.parent / f"{source.name}.png")
    assert png.mode == "L" and png.size == (64, 64)
    assert not [p for p in exported.parent.iterdir() if ".part-" in p.name]


def test_export_from_a_zip(tiny: L3Locator, tmp_path: Path) -> None:
    scan = write_band_series(tmp_path / "scan2")
    archive = tmp_path / "scan2.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in scan.iterdir():
            z.write(f, f"DICOM/{f.name}")
    r = tiny.predict(archive, export_dir=tmp_path / "out")
    exported = Path(r.export_path)
    assert exported.parent == tmp_path / "out" / "scan2"
    assert exported.read_bytes() == _by_sop(scan)[r.sop_instance_uid].read_bytes()


def test_nothing_exported_when_not_found(tiny: L3Locator, tmp_path: Path) -> None:
    r = tiny.predict(write_band_series(tmp_path / "absent", band_rows=None), export_dir=tmp_path / "out")
    assert not r.found and r.export_path is None and not (tmp_path / "out" / "absent").exists()


def test_nifti_slice_exported_with_its_affine(tiny: L3Locator, tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    vol = np.full((64, 64, 40), -1000, np.int16)  # [i, j, k], k along +z (feet -> head)
    vol[16:48, 8:56, :] = 40
    vol[24:40, :, 18:20] = 1000  # the band ('L3') on slices 18 and 19
    affine = np.array([[-2.0, 0, 0, 63], [0, -2.0, 0, 63], [0, 0, 5.0, -295.0], [0, 0, 0, 1]])
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(src))
    r = tiny.predict(src, export_dir=tmp_path / "out", export_neighbours=1)
    assert r.found and r.slice_index in (18, 19)
    k = r.slice_index
    out = Path(r.export_path)
    assert out == tmp_path / "out" / "vol" / f"vol_slice{k}.nii.gz"
    img = nib.load(str(out))
    assert img.shape == (64, 64)
    np.testing.assert_array_equal(np.asarray(img.dataobj), vol[:, :, k])
    np.testing.assert_allclose(img.affine @ [5, 7, 0, 1], affine @ [5, 7, k, 1])  # same world points
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == sorted([f"vol_slice{j}.nii.gz" for j in (k - 1, k, k + 1)] + [f"vol_slice{k}.png"])


def test_interrupted_export_leaves_no_partial_file(
    tiny: L3Locator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = write_band_series(tmp_path / "scan3")
    real_replace = export_mod.os.replace
    calls = []

    def replace_then_die(a: Path, b: Path) -> None:
        calls.append(b)
        if len(calls) == 3:  # the third file: killed between writing and renaming
            raise KeyboardInterrupt
        real_replace(a, b)

    monkeypatch.setattr(export_mod.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        tiny.predict(scan, export_dir=tmp_path / "out", export_neighbours=3)
    left = list((tmp_path / "out" / "scan3").iterdir())
    assert len(left) == 2 and not [p for p in left if ".part-" in p.name]
    by_name = {f.name: f for f in scan.iterdir()}
    assert all(p.read_bytes() == by_name[p.name].read_bytes() for p in left if p.suffix != ".png")


def test_failed_export_is_a_warning(tiny: L3Locator, tmp_path: Path) -> None:
    scan = write_band_series(tmp_path / "scan4")
    blocker = tmp_path / "out"
    blocker.write_text("a file where the export folder should go")
    r = tiny.predict(scan, export_dir=blocker)
    assert r.found and r.export_path is None
    assert any(w.startswith("export failed, nothing partial left") for w in r.warnings)


def test_cli_export(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from l3edge.cli import app

    monkeypatch.delenv("L3EDGE_MODEL", raising=False)
    scan = write_band_series(tmp_path / "scan5")
    runner = CliRunner()
    out = tmp_path / "exp"
    r = runner.invoke(
        app, ["predict", str(scan), "--model", str(tiny_model), "--json", "--export", str(out),
              "--export-neighbours", "1", "--out", str(tmp_path / "rows.csv")]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert Path(row["export_path"]).parent == out / "scan5"
    assert len(list((out / "scan5").iterdir())) == 4  # 3 slices + the PNG
    assert "export_path" in (tmp_path / "rows.csv").read_text().splitlines()[0]
    (tmp_path / "file").write_text("x")
    r = runner.invoke(
        app, ["predict", str(scan), "--model", str(tiny_model), "--export", str(tmp_path / "file")]
    )
    assert r.exit_code == 2 and "cannot create the --export folder" in r.stderr
