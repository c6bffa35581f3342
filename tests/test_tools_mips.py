"""Precomputed MIPs as training data: the public L3 dataset's npz layout, MIP manifests, orientation,
folds and the label contract of the cache metadata. Every npz here is generated in tmp_path from phantom
MIPs (tools.phantom_npz); no file of the real dataset is used."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l3edge.errors import InputError, UsageError
from l3edge.series import Projection
from tests.tiny_model import TINY_SPACE
from tools import build_cache as bc
from tools import orientation as ori
from tools.data import load_cache, read_index
from tools.folds import FOLDS_NAME, folds_for, patient_folds
from tools.mips import MipScan, read_l3_npz, read_manifest
from tools.phantom_npz import ANNOTATORS, write_phantom_npz

ABDOMEN_CHEST = {"abdomen": 3.0, "chest": 1.0}


def _npz(tmp_path: Path, head_last: float = 1.0, seed: int = 1, n: int = 6, **kw: Any) -> tuple[Path, list]:
    path = tmp_path / "l3_dataset.npz"
    truths = write_phantom_npz(path, n, seed, kw.pop("mix", ABDOMEN_CHEST), head_last, (2.0, 3.0), 2, **kw)
    return path, truths


def _build(*args: str) -> int:
    return bc.main([*map(str, args), "--quiet"])


def test_generated_npz_has_the_public_layout(tmp_path: Path) -> None:
    """The fixture itself: the keys, types and shapes that the public file has (so the tests test that)."""
    path, truths = _npz(tmp_path)
    with np.load(path, allow_pickle=True) as z:
        assert sorted(z.files) == ["images_f", "images_s", "names", "spacings", "ydata"]
        images, spacings, ydata = z["images_f"], z["spacings"], z["ydata"]
        assert images.dtype == object and images.shape == (6,) and z["names"].shape == (6,)
        assert ydata.shape == () and sorted(ydata.item()) == sorted(ANNOTATORS)
        assert len({im.shape for im in images}) > 1 and len({float(s[2]) for s in spacings}) > 1
        assert len({float(s[0]) for s in spacings}) > 1  # column spacings differ too
        a, b = (ydata.item()[k] for k in ANNOTATORS)
        with_l3 = [t["l3_in_view"] for t in truths]
        assert np.all(np.isnan(a) == ~np.array(with_l3)) and not np.allclose(a[with_l3], b[with_l3])
        for t, im, sp in zip(truths, images, spacings, strict=True):
            assert im.shape[0] == t["rows"] and float(sp[2]) == t["slice_mm"]


def test_npz_to_cache_parity_labels_and_folds(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import l3edge.answer as core
    import l3edge.locator as loc
    from l3edge.preprocess import normalize

    path, truths = _npz(tmp_path)
    cache = tmp_path / "cache"
    capsys.readouterr()
    args = [path, "--out", cache, "--like", tiny_model, "--head-last", "--split", "--folds", "3"]
    assert _build(*args, "--patient-regex", r"^(ph\d+-\d+)-") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cached"] == 6 and summary["in_view"] == sum(t["l3_in_view"] for t in truths)
    assert summary["orientation"] == {
        "orientation": {"head-last": 6},
        "by": {"flag": 6},
        "votes": {"no vote": 6},
    }
    space, scans = load_cache(cache)
    assert space == TINY_SPACE
    with np.load(path, allow_pickle=True) as z:
        images, spacings, ydata = z["images_f"], z["spacings"], z["ydata"].item()
    seen: list[np.ndarray] = []
    monkeypatch.setattr(core, "normalize", lambda image, sp: seen.append(image) or normalize(image, sp))
    locator = loc.L3Locator.load(tiny_model)
    for i, scan in enumerate(sorted(scans, key=lambda s: s.id)):
        m, dz, dx = scan.meta, float(spacings[i][2]), float(spacings[i][0])
        n = images[i].shape[0]
        # The runtime's own model-space image of the same MIP, head end first.
        locator.predict_projection(Projection(images[i][::-1].astype(np.float32), -dz * np.arange(n), dx))
        np.testing.assert_array_equal(scan.image, seen[-1])
        assert m["orientation"] == "head-last" and m["orientation_by"] == "flag"
        assert m["levels_known"] == ["L3"] and m["source"] == "l3-npz" and m["name"] == truths[i]["name"]
        assert scan.z_slices.size == n and m["mm_per_row"] == dz
        if truths[i]["l3_in_view"]:
            mean_row = (ydata["annotator_a"][i] + ydata["annotator_b"][i]) / 2  # stored rows, head last
            assert scan.label_z_mm == pytest.approx(-dz * (n - 1 - mean_row))
            assert m["label_row"] == pytest.approx(scan.grid.z_to_row(scan.label_z_mm))
            assert m["vertebrae"]["L3"] == {
                "z_mm": pytest.approx(scan.label_z_mm),
                "z_top_mm": None,
                "z_bottom_mm": None,
                "row_top": None,
                "row_bottom": None,
            }
            assert m["annotator_rows"] == {k: pytest.approx(ydata[k][i]) for k in ANNOTATORS}
            assert abs(scan.truth_slice() - (n - 1 - truths[i]["true_row_stored"])) <= 2
        else:
            assert not scan.in_view and m["vertebrae"] == {} and m["label_z_mm"] is None
    folds = json.loads((cache / FOLDS_NAME).read_text())
    assert (
        folds["k"] == 3 and folds["n_patients"] == 3 and sorted(len(f) for f in folds["folds"]) == [2, 2, 2]
    )
    for f in folds["folds"]:  # the two scans of a patient (names ph1-0000k-0/1) share a fold
        assert len({int(i.rsplit("-", 1)[1]) // 2 for i in f}) == 1
    assert "ph1-" not in (cache / FOLDS_NAME).read_text()  # ids only, no names
    assert _build(*args) == 0  # resumable: nothing new
    assert len(read_index(cache)["scans"]) == 6


def test_orientation_is_detected_with_the_bundled_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _npz(tmp_path, head_last=1.0, seed=3, n=5, mix={"abdomen": 1.0})
    capsys.readouterr()
    assert _build(path, "--out", tmp_path / "cache") == 0  # --detect is the npz default
    summary = json.loads(capsys.readouterr().out)
    assert summary["orientation"]["orientation"] == {"head-last": 5}
    (by,) = summary["orientation"]["by"]
    votes = summary["orientation"]["votes"]  # scans whose two confidences are too close do not vote
    assert by.startswith("detected: file majority") and votes.get("with", 0) >= 3 and "against" not in votes
    for m in read_index(tmp_path / "cache")["scans"]:
        assert set(m["orientation_scores"]) == {"head-first", "head-last"}


def _scan(i: int, origin: str = "a.npz", labelled: bool = True) -> MipScan:
    return MipScan(
        f"s{i}", "l3-npz", origin, f"{origin}#{i}", 2.0, 1.0, "L3", {"L3": 5.0 if labelled else None}
    )


def test_orientation_votes_and_decisions() -> None:
    scans = [_scan(i) for i in range(5)] + [_scan(5, labelled=False)]
    hf = {"head-first": 0.9, "head-last": 0.2}
    hl = {"head-first": 0.2, "head-last": 0.9}
    close = {"head-first": 0.5, "head-last": 0.52}
    scores = [hf, hf, hf, hf, hl, None]
    assert ori.vote(close, 0.05) is None and ori.vote(hl, 0.05) == "head-last"
    out = ori.decide(scans, scores, "detect", min_share=0.75)
    assert {s.orientation for s in out} == {"head-first"}
    assert out[5].orientation_by == "detected: file majority (4 of 5 votes)"
    per = ori.decide(scans, scores, "detect-per-scan")
    assert [s.orientation for s in per] == ["head-first"] * 4 + ["head-last", "head-first"]
    assert per[4].orientation_by == "detected: this scan" and per[5].orientation_by.startswith(
        "detected: file"
    )
    with pytest.raises(UsageError, match="split"):
        ori.decide(scans, [hf, hf, hl, hl, hf, None], "detect")
    with pytest.raises(UsageError, match="--head-first or --head-last"):
        ori.decide(scans, [close] * 5 + [None], "detect")
    assert {s.orientation_by for s in ori.decide(scans, scores, "head-last")} == {"flag"}
    # Two files decide separately.
    two = [_scan(0, "a.npz"), _scan(1, "b.npz")]
    assert [s.orientation for s in ori.decide(two, [hf, hl], "detect")] == ["head-first", "head-last"]
    # Detection runs the scorer on labelled scans only; an unreadable MIP does not vote.
    calls: list[str] = []
    bad = MipScan("bad", "mip-csv", "m.csv", "missing.npy", 2.0, 1.0, "L3", {"L3": 1.0})
    good = MipScan("ok", "mip-csv", "m.csv", "x", 2.0, 1.0, "L3", {"L3": 1.0}, image=np.zeros((8, 4)))
    got = ori.score_all([bad, good, _scan(9, labelled=False)], lambda s, m: calls.append(s.scan_id) or hf)
    assert got == [None, hf, None] and calls == ["ok"]


def test_npz_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _npz(tmp_path)
    with np.load(path, allow_pickle=True) as z:
        arrays = {k: z[k] for k in z.files}

    def write(name: str, **change: Any) -> Path:
        p = tmp_path / name
        np.savez(p, **{k: v for k, v in {**arrays, **change}.items() if v is not None})
        return p

    cases = [
        (write("nokey.npz", ydata=None), "no ydata"),
        (write("notdict.npz", ydata=np.array([1.0, 2.0])), "0-d object array holding a dict"),
        (write("short.npz", names=arrays["names"][:3]), "must match"),
        (write("ann.npz", ydata=np.array({"a": np.zeros(2)}, dtype=object)), "has 2 rows for 6 scans"),
        (tmp_path / "absent.npz", "cannot read the npz"),
    ]
    for p, match in cases:
        with pytest.raises(InputError, match=match):
            read_l3_npz(p)
        capsys.readouterr()
        assert _build(p, "--out", tmp_path / "c", "--head-first") == 3
        assert match in capsys.readouterr().err
    with pytest.raises(UsageError, match="L3 only"):
        read_l3_npz(path, level="L1")
    # A bad scan does not stop the others: a NaN image and a label beyond the image are listed as failed.
    images = arrays["images_f"].copy()
    images[0] = np.full((10, 10), np.nan)
    rows = {k: v.copy() for k, v in arrays["ydata"].item().items()}
    rows["annotator_a"][1] = rows["annotator_b"][1] = 1e6
    p = write("bad_scans.npz", images_f=images, ydata=np.array(rows, dtype=object))
    assert _build(p, "--out", tmp_path / "c2", "--head-first") == 0
    failed = read_index(tmp_path / "c2")["failed"]
    assert sorted(failed) == ["bad_scans-00000", "bad_scans-00001"]
    assert "NaN" in failed["bad_scans-00000"] and "outside the MIP" in failed["bad_scans-00001"]


def _mip_files(tmp_path: Path) -> tuple[np.ndarray, Path, Path]:
    from PIL import Image

    path, truths = _npz(tmp_path, head_last=0.0, n=2, mix={"abdomen": 1.0})
    with np.load(path, allow_pickle=True) as z:
        mip = z["images_f"][0].astype(np.float32)
    np.save(tmp_path / "a.npy", mip)
    Image.fromarray((mip + 2048).astype(np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "bad8.png")
    return mip, tmp_path / "a.npy", tmp_path / "a.png"


def test_manifest_npy_png_and_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mip, npy, png = _mip_files(tmp_path)
    n = mip.shape[0]
    single = tmp_path / "single.csv"
    single.write_text(
        f"image,mm_per_row,mm_per_col,row,level,patient\n{npy.name},2.5,0.8,{n // 2},,p1\n"
        f"{png.name},2.5,0.8,,L1,p1\nbad8.png,2.5,0.8,3,,p2\n"
    )
    assert _build(single, "--out", tmp_path / "c1", "--png-hu-offset", "2048") == 0
    index = read_index(tmp_path / "c1")
    assert len(index["scans"]) == 2 and "16-bit" in next(iter(index["failed"].values()))
    by_level = {m["level"]: m for m in index["scans"]}
    assert by_level["L3"]["label_z_mm"] == pytest.approx(-2.5 * (n // 2))
    assert by_level["L3"]["levels_known"] == ["L3"] and by_level["L1"]["levels_known"] == ["L1"]
    assert by_level["L1"]["vertebrae"] == {} and not by_level["L1"]["in_view"]
    assert by_level["L3"]["orientation_by"] == "default" and by_level["L3"]["patient"] == "p1"
    _, scans = load_cache(tmp_path / "c1")
    np.testing.assert_array_equal(scans[0].image, scans[1].image)  # the PNG with its offset = the .npy

    multi = tmp_path / "multi.csv"
    multi.write_text(
        "image,mm_per_row,mm_per_col,L3_row,L1_row,T12_row,hu_offset\n"
        f"{png.name},2.5,0.8,{n - 10},10.5,,2048\n"
    )
    assert _build(multi, "--out", tmp_path / "c2", "--head-last") == 0
    (m,) = read_index(tmp_path / "c2")["scans"]
    assert m["levels_known"] == ["L1", "L3", "T12"] and sorted(m["vertebrae"]) == ["L1", "L3"]
    assert m["label_z_mm"] == pytest.approx(-2.5 * 9) and m["vertebrae"]["L1"]["z_mm"] == pytest.approx(
        -2.5 * (n - 11.5)
    )  # head last: stored row r is row n - 1 - r from the head
    assert m["vertebrae"]["L3"]["row_top"] is None and m["label_rows_stored"]["T12"] is None
    capsys.readouterr()
    assert _build(multi, "--out", tmp_path / "c3", "--level", "L5") == 2
    assert "no L5_row column" in capsys.readouterr().err
    for body, match in [
        ("image,mm_per_row\na.npy,1\n", "mm_per_col"),
        ("image,mm_per_row,mm_per_col\na.npy,1,1\n", "label column"),
        ("image,mm_per_row,mm_per_col,row,L3_row\na.npy,1,1,2,2\n", "not both"),
        ("image,mm_per_row,mm_per_col,row\na.png,1,1,2\n", "HU offset"),
        ("image,mm_per_row,mm_per_col,row\na.npy,0,1,2\n", "positive"),
        ("image,mm_per_row,mm_per_col,row\na.npy,1,1,x\n", "not a number"),
        ("image,mm_per_row,mm_per_col,row\na.npy,1,1,2\na.npy,1,1,3\n", "listed twice"),
    ]:
        (tmp_path / "m.csv").write_text(body)
        with pytest.raises(InputError, match=match):
            read_manifest(tmp_path / "m.csv")


def test_folds_by_patient(tmp_path: Path) -> None:
    metas = [{"id": f"s{i}", "patient": f"p{i // 3}"} for i in range(12)] + [{"id": "solo"}]
    folds = patient_folds(metas, 3, seed=4)
    assert sorted(i for f in folds for i in f) == sorted(m["id"] for m in metas)
    owner = {i: n for n, f in enumerate(folds) for i in f}
    for p in range(4):
        assert len({owner[f"s{i}"] for i in range(3 * p, 3 * p + 3)}) == 1
    assert patient_folds(metas, 3, seed=4) == folds and max(map(len, folds)) - min(map(len, folds)) <= 3
    with pytest.raises(UsageError, match="5 patients cannot make 6"):
        patient_folds(metas, 6)
    got, where = folds_for(tmp_path, metas, 3, seed=4)
    assert got == folds and "by patient" in where
    (tmp_path / FOLDS_NAME).write_text(json.dumps({"k": 2, "folds": [["s0"], ["s1"]]}))
    with pytest.raises(UsageError, match="--folds 2"):
        folds_for(tmp_path, metas, 3)
    with pytest.raises(UsageError, match="exactly the cache's 13 scans"):
        folds_for(tmp_path, metas, 2)


def test_label_contract_phantom_and_scan_list(tmp_path: Path, dicom_series: Any) -> None:
    from tools.data import default_space

    assert _build("--phantoms", "2", "--seed", "5", "--out", tmp_path / "ph") == 0
    for m in read_index(tmp_path / "ph")["scans"]:
        assert m["levels_known"] == sorted(m["vertebrae"]) and "L3" in m["levels_known"]
        for v in m["vertebrae"].values():
            assert set(v) == {"z_mm", "z_top_mm", "z_bottom_mm", "row_top", "row_bottom"}
            assert v["row_top"] is not None and v["row_top"] < v["row_bottom"]
    folder = dicom_series("scan", band_rows=(20, 21))
    csv = tmp_path / "scans.csv"
    csv.write_text(f"path,z_mm,level\n{folder},-152.5,\n{folder},,L1\n")
    records = bc.gather_records([csv])
    space = default_space()
    bc.build_cache(
        bc.record_jobs(records, tmp_path / "sc", space, "float32"), tmp_path / "sc", space, progress=False
    )
    by_level = {m["level"]: m for m in read_index(tmp_path / "sc")["scans"]}
    assert by_level["L3"]["levels_known"] == ["L3"] and by_level["L1"]["levels_known"] == ["L1"]
    assert by_level["L3"]["vertebrae"]["L3"]["z_top_mm"] is None and by_level["L1"]["vertebrae"] == {}
    assert math.isclose(by_level["L3"]["vertebrae"]["L3"]["z_mm"], -152.5)
