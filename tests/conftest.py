"""Shared fixtures: the tiny band-detector IR and a small synthetic DICOM series with a bright band ('L3')."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_model import band_volume_z, save_tiny_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def compiled_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests (and the processes they start) cache compiled models in a temporary folder, never the user's."""
    folder = tmp_path_factory.mktemp("compiled_model_cache")
    before = os.environ.get("L3EDGE_CACHE_DIR")
    os.environ["L3EDGE_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("L3EDGE_CACHE_DIR", None)
    else:
        os.environ["L3EDGE_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.xml path of the tiny band-detector IR (padding-free, output stride 16, with l3edge metadata)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model") / "tiny.xml")


@pytest.fixture(scope="session")
def tiny_model_padded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.xml path of the tiny IR with a zero-padded 3x3 blur in front (strip and window differ at borders)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model_padded") / "tiny_padded.xml", padded=True)


def write_band_series(
    folder: Path,
    band_rows: tuple[int, ...] | None = (20, 21),
    n_slices: int = 40,
    size: int = 64,
    spacing_mm: float = 5.0,
    pixel_mm: float = 2.0,
    z_top_mm: float = -100.0,
    series_uid: str | None = None,
) -> Path:
    """Write a CT series of ``n_slices`` axial slices (``size`` x ``size``) into ``folder``.

    Air, a soft-tissue block, and a bone-bright block on slices ``band_rows`` (superior-first indices).
    Files are written in a shuffled order without extension. Returns ``folder``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), series_uid or generate_uid()
    frame = generate_uid()
    z = band_volume_z(n_slices, spacing_mm, z_top_mm)
    order = np.random.default_rng(0).permutation(n_slices)
    for i in order:
        hu = np.full((size, size), -1000, np.int16)
        hu[size // 4 : 3 * size // 4, size // 8 : 7 * size // 8] = 40
        if band_rows and i in band_rows:
            hu[size // 2 - 4 : size // 2 + 4, :] = 1000
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName = ""
        ds.PatientID = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(i) + 1
        ds.ImagePositionPatient = [-(size - 1) * pixel_mm / 2, -(size - 1) * pixel_mm / 2, float(z[i])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.SliceThickness = spacing_mm
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = hu.tobytes()
        ds.save_as(folder / f"IM{int(i) * 7919 % 100000:05d}", enforce_file_format=True)
    return folder


@pytest.fixture
def dicom_series(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``dicom_series(name="scan", **write_band_series kwargs) -> folder`` under tmp_path."""

    def make(name: str = "scan", **kw: object) -> Path:
        return write_band_series(tmp_path / name, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} not present (only in the project's workplace)")
    return SHARED


SMALL_PHANTOM = {"matrix": 128, "pixel_spacing_mm": 3.2, "slice_spacing_mm": 5.0, "slice_thickness_mm": 5.0}
"""Small, quick phantoms (about a second each to write) that the bundled model still reads correctly."""


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four small phantom DICOM series (three abdomen scans with L3, one chest scan without), written once."""
    from l3edge.phantom import write_phantom

    root = tmp_path_factory.mktemp("cohort")
    scans = []
    for seed, region in ((1, "abdomen"), (2, "abdomen"), (3, "chest"), (4, "abdomen")):
        write_phantom(root / f"ph{seed}", seed, "dicom", region, **SMALL_PHANTOM)
        scans.append(root / f"ph{seed}")
    return scans
