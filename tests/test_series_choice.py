"""Several axial CT series in one study: preference order, acquisition splits, the choice by content, zip
input and ``--series all`` (library and CLI), on the tiny band model, phantoms and the real PET/CT export."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from l3edge.dicom_choice import Traits, choose, kernel_class, phase, split_series
from l3edge.dicom_header import read_header
from l3edge.errors import InputError
from l3edge.locator import L3Locator
from l3edge.scan import read_projection
from tests.conftest import write_band_series
from tests.dicom_factory import make_volume, write_series

PETCT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_dev" / "petct_two_series_l3"
SMALL = {"matrix": 128, "pixel_spacing_mm": 3.2, "slice_spacing_mm": 5.0, "slice_thickness_mm": 5.0}


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> L3Locator:
    return L3Locator.load(tiny_model, inference_precision="f32")


@pytest.mark.parametrize(
    ("kernel", "description", "expected"),
    [
        ("B30f", "", "soft"),
        ("Br40d\\3", "", "soft"),
        ("B70f", "", "sharp"),
        ("STANDARD", "", "soft"),
        ("BONEPLUS", "", "sharp"),
        ("LUNG", "", "sharp"),
        ("FC18", "", "soft"),
        ("FC52", "", "sharp"),
        ("B", "", "soft"),
        ("YB", "", "sharp"),
        ("", "Lung 1.25mm", "sharp"),
        ("", "Soft tissue 3mm", "soft"),
        ("", "CHEST ABD PELVIS", "unknown"),
    ],
)
def test_kernel_class(kernel: str, description: str, expected: str) -> None:
    assert kernel_class(kernel, description) == expected


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("ABD PORTAL VENOUS 3mm", "portal venous"),
        ("CT ABDOMEN PV", "portal venous"),
        ("Arterial phase 1mm", "arterial"),
        ("CTA AORTA", "arterial"),
        ("delayed 5 min", "delayed"),
        ("CAP 5mm", "unknown"),
        ("seven slices", "unknown"),  # words, not substrings ('ven')
    ],
)
def test_phase(description: str, expected: str) -> None:
    assert phase(description) == expected


def _traits(**kw: object) -> Traits:
    base = dict(kernel="B30f", kernel_class="soft", phase="unknown", thickness_mm=3.0, coverage_mm=400.0)
    base.update(kw)
    return Traits(n_slices=100, **base)  # type: ignore[arg-type]


def test_preference_order() -> None:
    order = [
        ("soft pv 3mm", _traits(phase="portal venous")),
        ("soft 3mm big", _traits(coverage_mm=600.0)),
        ("soft 3mm", _traits()),
        ("soft 1mm", _traits(thickness_mm=0.625)),
        ("soft arterial", _traits(phase="arterial")),
        ("unknown kernel", _traits(kernel_class="unknown", phase="portal venous")),
        ("lung", _traits(kernel_class="sharp", phase="portal venous")),
    ]
    ranked = sorted(order, key=lambda kv: kv[1].key(kv[0]))
    assert [k for k, _ in ranked] == [k for k, _ in order]


@dataclass
class _Score:
    found: bool
    confidence: float


def _scores(*items: tuple[bool, float] | InputError):  # noqa: ANN202
    read: list[int] = []

    def evaluate(i: int) -> _Score:
        read.append(i)
        item = items[i]
        if isinstance(item, InputError):
            raise item
        return _Score(*item)

    return evaluate, read


def test_choose_stops_when_nothing_can_change_the_answer() -> None:
    ev, read = _scores((True, 0.95), (True, 0.99), (False, 0.1))
    c = choose(3, ev)
    assert c.index == 0 and read == [0] and c.n_read == 1 and c.outcomes[1:] == (None, None)


def test_choose_by_content_then_preference() -> None:
    ev, read = _scores((False, 0.4), (True, 0.97), (True, 0.99))
    assert choose(3, ev).index == 1 and read == [0, 1]  # 0.97 + 0.10 >= 1: the third cannot win
    ev, read = _scores((True, 0.85), (True, 0.97))
    assert choose(2, ev).index == 1 and read == [0, 1]  # 0.85 is more than 0.10 below 0.97
    ev, read = _scores((True, 0.6), (True, 0.65))
    assert choose(2, ev).index == 0  # within the margin: the preferred one
    ev, read = _scores((False, 0.4), (False, 0.6))
    c = choose(2, ev)
    assert c.index == 0 and c.n_found == 0 and read == [0, 1]  # found nowhere: the preferred one
    ev, read = _scores(InputError("x: broken"), (True, 0.9))
    c = choose(2, ev)
    assert c.index == 1 and isinstance(c.outcomes[0], InputError)
    ev, _ = _scores(InputError("x: broken"), InputError("y: broken"))
    with pytest.raises(InputError, match="x: broken"):
        choose(2, ev)


def _acquisitions(folder: Path, uid: str = "1.2.826.0.1.3680043.8.498.55") -> tuple[Path, list[float]]:
    """One series, two acquisitions interleaved in z (offset 1 mm) where they overlap: acquisition 1 from
    z -100 up (24 slices), acquisition 2 from z -59 up (28 slices, so it covers more), both 2.5 mm apart."""
    z1 = [-100.0 + 2.5 * k for k in range(24)]
    z2 = [-59.0 + 2.5 * k for k in range(28)]
    vol = make_volume(nz=24, ny=32, nx=40)
    write_series(folder / "a1", vol, z=z1, uid=uid, seed=1, extra={"AcquisitionNumber": 1})
    write_series(folder / "a2", vol, z=z2, uid=uid, seed=2, extra={"AcquisitionNumber": 2})
    return folder, z2


def test_series_split_by_acquisition(tmp_path: Path) -> None:
    folder, z2 = _acquisitions(tmp_path / "study")
    headers = [read_header(f) for f in sorted(folder.rglob("IM*"))]
    parts = split_series([h for h in headers if h is not None])
    assert [(name, len(p)) for name, p in parts] == [("acquisition 2", 28), ("acquisition 1", 24)]
    proj = read_projection(folder)  # without the split: "slice spacing is wildly uneven"
    assert proj.n_slices == 28 and proj.series.part == "acquisition 2"  # it covers more z
    assert any("holds 2 acquisitions that overlap in z" in w for w in proj.series.warnings)
    np.testing.assert_allclose(proj.z_mm, sorted(z2, reverse=True))


def test_acquisitions_that_tile_z_stay_one_series(tmp_path: Path) -> None:
    vol = make_volume(nz=12, ny=32, nx=40)
    z = [2.5 * k for k in range(12)]
    uid = "1.2.826.0.1.3680043.8.498.56"
    for k in range(3):  # one acquisition per table position (step-and-shoot), as axial-mode scanners write
        write_series(tmp_path / f"p{k}", vol[4 * k : 4 * k + 4], z=z[4 * k : 4 * k + 4], uid=uid, seed=k,
                     extra={"AcquisitionNumber": k + 1})  # fmt: skip
    proj = read_projection(tmp_path)
    assert proj.n_slices == 12 and proj.series.part is None and proj.series.warnings == ()


def test_position_clusters_split_a_series_without_acquisition_numbers(tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.8.498.57"
    vol = make_volume(nz=10, ny=32, nx=40)
    write_series(tmp_path / "a", vol, z=[2.5 * k for k in range(10)], uid=uid, seed=1)
    b = write_series(tmp_path / "b", vol, z=[1.0 + 2.5 * k for k in range(10)], uid=uid, seed=2)
    for f in b.files:  # the second reconstruction is centred elsewhere (another field of view)
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [-50.0, -60.0, ds.ImagePositionPatient[2]]
        ds.save_as(f)
    proj = read_projection(tmp_path)
    assert proj.n_slices == 10 and proj.series.part in ("part 1", "part 2")


def _two_band_series(root: Path) -> tuple[str, str]:
    """Series A (no band: no 'L3', and covering more z, so read first) and series B (a band)."""
    a, b = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102"
    write_band_series(root / "A", band_rows=None, n_slices=44, series_uid=a)
    write_band_series(root / "B", band_rows=(20, 21), n_slices=40, series_uid=b)
    return a, b


def test_the_series_that_shows_l3_is_chosen(tiny: L3Locator, tmp_path: Path) -> None:
    a, b = _two_band_series(tmp_path / "study")
    r = tiny.predict(tmp_path / "study")
    assert r.found and r.series_instance_uid == b and r.n_slices == 40
    assert r.series_choice.startswith(f"{b}: the only one of 2 candidate series where L3 is found")
    (other,) = [w for w in r.warnings if w.startswith("other candidate")]
    assert a in other and "L3 not found" in other
    forced = tiny.predict(tmp_path / "study", series_uid=a)
    assert not forced.found and forced.series_choice.startswith("forced with series_uid")
    every = tiny.predict_all(tmp_path / "study")
    assert [(x.series_instance_uid, x.found) for x in every] == [(a, False), (b, True)]
    assert all(x.series_choice.startswith("--series all: candidate") for x in every)


def test_acquisition_with_l3_is_chosen(tiny: L3Locator, tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.8.498.103"
    write_band_series(tmp_path / "s" / "a1", band_rows=None, n_slices=40, series_uid=uid, z_top_mm=0.0)
    write_band_series(tmp_path / "s" / "a2", band_rows=(20, 21), n_slices=40, series_uid=uid, z_top_mm=-2.0)
    for f in (tmp_path / "s" / "a2").iterdir():
        ds = pydicom.dcmread(f)
        ds.AcquisitionNumber = 2
        ds.save_as(f)
    r = tiny.predict(tmp_path / "s")
    assert r.found and r.series_choice.startswith(f"{uid} (acquisition 2): the only one of 2")
    assert len(tiny.predict_all(tmp_path / "s")) == 2


def _zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder.parent))
    return out


def test_zip_of_a_study_gives_the_folders_result(tiny: L3Locator, tmp_path: Path) -> None:
    _two_band_series(tmp_path / "study")
    archive = _zip_folder(tmp_path / "study", tmp_path / "study.zip")
    rf, rz = tiny.predict(tmp_path / "study"), tiny.predict(archive)
    keep = ("found", "z_mm", "slice_index", "instance_number", "sop_instance_uid", "series_instance_uid")
    assert [getattr(rz, k) for k in keep] == [getattr(rf, k) for k in keep] and rz.found
    assert rz.path == str(archive) and rz.series_choice == rf.series_choice


def test_cli_series_all_and_zip(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from l3edge.cli import app

    monkeypatch.delenv("L3EDGE_MODEL", raising=False)
    a, b = _two_band_series(tmp_path / "study")
    archive = _zip_folder(tmp_path / "study", tmp_path / "study.zip")
    out = tmp_path / "rows.csv"
    runner = CliRunner()
    args = ["predict", str(tmp_path / "study"), str(archive), "--model", str(tiny_model), "--json"]
    r = runner.invoke(app, [*args, "--series", "all", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    # Scans come back as they finish (two workers); each scan's series stay together, in preference order.
    by_scan = sorted(
        ((x["path"], x["series_instance_uid"], x["found"]) for x in rows),
        key=lambda t: t[0] != str(tmp_path / "study"),
    )
    assert by_scan == [
        (str(tmp_path / "study"), a, False),
        (str(tmp_path / "study"), b, True),
        (str(archive), a, False),
        (str(archive), b, True),
    ]
    assert len(out.read_text().splitlines()) == 5  # header + one row per series
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    assert [x["series_instance_uid"] for x in rows] == [b, b] and all(x["series_choice"] for x in rows)


def _phantom_study(root: Path) -> tuple[str, dict]:
    """A chest series (L3 out of view, covering more z, so read first) and an abdomen series with L3."""
    from l3edge.phantom import build_anatomy, sample_config, write_phantom

    chest_cfg = sample_config(3, "chest", **SMALL)
    t12 = build_anatomy(chest_cfg).spine.by_name("T12")
    chest_cfg = chest_cfg.with_overrides(scan_z_range=(t12.z_top + 10.0, t12.z_top + 410.0))
    write_phantom(root / "chest", 3, config=chest_cfg)
    abd_cfg = sample_config(4, "abdomen", **SMALL)
    l3 = build_anatomy(abd_cfg).spine.by_name("L3")
    truth = write_phantom(
        root / "abdomen",
        4,
        config=abd_cfg.with_overrides(scan_z_range=(l3.z_center - 150, l3.z_center + 150)),
    )
    uid = str(
        pydicom.dcmread(next((root / "abdomen").glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
    )
    return uid, truth.to_dict()


@pytest.mark.slow
def test_phantom_study_where_one_series_holds_l3(tmp_path: Path) -> None:
    uid, truth = _phantom_study(tmp_path / "study")
    locator = L3Locator.load()  # the bundled model: a chest-only series against one with L3
    r = locator.predict(tmp_path / "study")
    assert r.found and r.series_instance_uid == uid
    assert abs(r.z_mm - truth["l3_z_mm"]) < 20.0
    assert any(w.startswith("other candidate series") and "L3 not found" in w for w in r.warnings)
    every = locator.predict_all(tmp_path / "study")
    assert [x.found for x in every] == [False, True]


@pytest.mark.slow
@pytest.mark.skipif(not PETCT.is_dir(), reason=f"{PETCT} not present (only in the project's workplace)")
def test_real_petct_two_series_folder_needs_no_option() -> None:
    truth = json.loads((PETCT.parent / "truth.json").read_text())["petct_two_series_l3"]
    locator = L3Locator.load()
    r = locator.predict(PETCT)
    assert r.found and r.series_instance_uid == truth["series_with_l3"], r.to_dict()
    lo, hi = truth["l3_body_z_mm"]
    assert lo - 5.0 <= r.z_mm <= hi + 5.0
    assert r.series_choice.startswith(truth["series_with_l3"])
    assert sum(w.startswith("other candidate series") for w in r.warnings) == 1


def test_qa_and_export_reuse_the_answer_and_the_slice(
    tiny: L3Locator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model runs once per candidate read (the QA picture is drawn from the answer already computed), and
    the axial slice at the answer is read once for the QA picture and the export together."""
    from l3edge import answer, slices

    _two_band_series(tmp_path / "study")
    runs, reads = [], []
    real_locate, real_read = answer.locate, slices.DicomSlices._read
    monkeypatch.setattr(answer, "locate", lambda *a: runs.append(a[2]) or real_locate(*a))
    monkeypatch.setattr("l3edge.study.locate", answer.locate)
    monkeypatch.setattr(slices.DicomSlices, "_read", lambda self, i: reads.append(i) or real_read(self, i))
    r = tiny.predict(tmp_path / "study", qa_dir=tmp_path / "qa", export_dir=tmp_path / "exp")
    assert r.found and r.qa_path and r.export_path
    assert len(runs) == 2  # two candidates, each answered once; none again for the picture
    assert len(reads) == 1  # one slice read, shared by the QA picture and the export's PNG
    plain = tiny.predict(tmp_path / "study")
    assert (plain.z_mm, plain.slice_index, plain.confidence) == (r.z_mm, r.slice_index, r.confidence)
