"""Fuzz the DICOM reader: mutated header fields or bytes give a projection or an InputError, nothing else."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from l3edge.errors import InputError
from l3edge.scan import read_projection
from tests.dicom_factory import make_volume, write_series

_FIELDS = {
    "Rows": st.integers(-5, 70000),
    "Columns": st.integers(-5, 70000),
    "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 40),
    "PixelRepresentation": st.integers(0, 2),
    "SamplesPerPixel": st.integers(0, 4),
    "NumberOfFrames": st.integers(-1, 3),
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "RGB", "PALETTE COLOR", "", "YBR_FULL"]),
    "ImagePositionPatient": st.lists(
        st.sampled_from(["0", "-1e308", "nan", "inf", "abc", "1.5", ""]), min_size=0, max_size=4
    ),
    "ImageOrientationPatient": st.lists(
        st.sampled_from(["0", "1", "-1", "0.7071", "nan", "x", "1e9"]), min_size=0, max_size=7
    ),
    "PixelSpacing": st.lists(
        st.sampled_from(["0", "-1", "0.5", "nan", "1e300", "q"]), min_size=0, max_size=3
    ),
    "RescaleSlope": st.sampled_from(["0", "-1", "nan", "1e308", "2", "z"]),
    "RescaleIntercept": st.sampled_from(["-1024", "nan", "inf", "", "w"]),
    "Modality": st.sampled_from(["CT", "MR", "", "OT"]),
    "ImageType": st.sampled_from([["ORIGINAL"], ["DERIVED", "SECONDARY"], ["LOCALIZER"], []]),
    "SeriesInstanceUID": st.sampled_from(["1.2.3", "", "x" * 70]),
    "PixelData": st.binary(max_size=64),
}
_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless]


@pytest.fixture(scope="module")
def seed_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz_seed")
    return {
        ts: write_series(root / ts, make_volume(nz=4, ny=12, nx=16), transfer_syntax=ts).folder
        for ts in _SYNTAXES
    }


def _mutate_field(path: Path, keyword: str, value: object) -> None:
    ds = pydicom.dcmread(path, force=True)
    if keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") and isinstance(
        value, list
    ):
        value = "\\".join(value)  # raw DS strings, possibly invalid, written as-is
        ds[keyword].value = value
    else:
        setattr(ds, keyword, value)
    ds.save_as(path)


def _mutate_bytes(path: Path, edits: list[tuple[float, int]], cut: float | None) -> None:
    data = bytearray(path.read_bytes())
    for where, byte in edits:
        data[int(where * (len(data) - 1))] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    path.write_bytes(bytes(data))


_field_edit = st.sampled_from(sorted(_FIELDS)).flatmap(
    lambda k: st.tuples(st.just("field"), st.just(k), _FIELDS[k])
)
_byte_edit = st.tuples(
    st.just("bytes"),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=12),
    st.one_of(st.none(), st.floats(0, 1)),
)


@settings(
    max_examples=int(os.environ.get("L3EDGE_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ts=st.sampled_from(_SYNTAXES),
    edits=st.lists(st.tuples(st.integers(0, 3), st.one_of(_field_edit, _byte_edit)), min_size=1, max_size=3),
)
def test_mutated_series_reads_or_raises_input_error(
    seed_series: dict[str, Path], ts: str, edits: list[tuple[int, tuple]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scan"
        shutil.copytree(seed_series[ts], folder)
        files = sorted(folder.iterdir())
        for index, edit in edits:
            target = files[index % len(files)]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if edit[0] == "field":
                        _mutate_field(target, edit[1], edit[2])
                    else:
                        _mutate_bytes(target, edit[1], edit[2])
            except Exception:  # noqa: BLE001 - pydicom may refuse to write the mutation; the file stays as is
                event("mutation not written")
                continue
        try:
            proj = read_projection(folder)
        except InputError as exc:
            assert "\n" not in str(exc)
            event("InputError")
        else:
            event("read")
            assert proj.mip_hu.shape[0] == proj.z_mm.shape[0] >= 2
