"""Training tools: scan lists, the model-space cache (parity with the runtime), training, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from l3edge.errors import InputError, UsageError
from l3edge.series import Projection, SeriesInfo
from tests.tiny_model import TINY_SPACE
from tools import build_cache as bc
from tools import crossval as cv
from tools import evaluate as ev
from tools import pipeline as pl
from tools import train as tr
from tools.augment import AugmentConfig
from tools.checkpoint import load_checkpoint
from tools.data import (
    ScanRecord,
    default_space,
    gather_records,
    label_from_record,
    load_cache,
    read_scan_list,
)
from tools.models import VGG16, build_model
from tools.strips import StripBatches

TINY_NET = {"widths": [4, 8, 8, 8], "hidden": 8}
QUICK = {"batch": 4, "eval_every": 1000, "log_every": 1000, "device": "cpu", "threads": 1, **TINY_NET}


def _projection(n: int = 30) -> Projection:
    z = -100.0 - 2.5 * np.arange(n)
    series = SeriesInfo(
        "dicom",
        Path("x"),
        "1.2",
        (),
        tuple(range(n - 1, -1, -1)),
        (None,) * n,
        tuple(f"1.2.3.{i}" for i in range(n)),
    )
    return Projection(np.zeros((n, 8), np.float32), z, 1.0, series)


# --- scan lists -------------------------------------------------------------------------------------------


def test_scan_list_label_conventions(tmp_path: Path) -> None:
    csv = tmp_path / "scans.csv"
    csv.write_text(
        "path,z_mm,slice_index,sop_instance_uid,level\na,-110.0,,,\n/abs/b,,27,,l3\nc,,,1.2.3.5,L2\nd,,,,\n"
    )
    recs = read_scan_list(csv)
    assert [r.path for r in recs] == [tmp_path / "a", Path("/abs/b"), tmp_path / "c", tmp_path / "d"]
    assert (recs[0].z_mm, recs[1].slice_index, recs[2].sop_instance_uid) == (-110.0, 27, "1.2.3.5")
    assert [r.level for r in recs] == ["L3", "L3", "L2", "L3"]
    proj = _projection()
    assert label_from_record(recs[0], proj) == (-110.0, True)
    # slice_index 27 in z-ascending order is superior-first row 30 - 1 - 27 = 2.
    assert label_from_record(recs[1], proj) == (-105.0, True)
    assert label_from_record(recs[2], proj) == (-112.5, True)
    z, in_view = label_from_record(recs[3], proj)
    assert math.isnan(z) and not in_view
    assert label_from_record(ScanRecord(Path("e"), z_mm=50.0), proj)[1] is False
    with pytest.raises(InputError, match="slice_index 99"):
        label_from_record(ScanRecord(Path("f"), slice_index=99), proj)
    assert len({r.scan_id for r in recs}) == 4


@pytest.mark.parametrize(
    "body, match",
    [
        ("file,z_mm\na,1\n", "'path' column"),
        ("path,z_mm,slice_index\na,1,2\n", "one label column"),
        ("path,slice_index\na,x\n", "not a number"),
        ("path,slice_index\na,-1\n", ">= 0"),
    ],
)
def test_scan_list_errors(tmp_path: Path, body: str, match: str) -> None:
    (tmp_path / "s.csv").write_text(body)
    with pytest.raises(InputError, match=match):
        read_scan_list(tmp_path / "s.csv")


# --- cache parity with the runtime (DICOM) ----------------------------------------------------------------


def test_cache_parity_and_ir_evaluation(
    tmp_path: Path, dicom_series, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached model-space image is exactly what the locator computes; the IR path of evaluate works."""
    import l3edge.answer as core
    import l3edge.locator as loc
    from l3edge.scan import read_projection

    folder = dicom_series("scan", band_rows=(20, 21))
    proj = read_projection(folder)
    row = 20
    csv = tmp_path / "scans.csv"
    csv.write_text(
        "path,z_mm,slice_index,sop_instance_uid\n"
        f"{folder},{proj.z_mm[row]},,\n{folder},,{proj.series.slice_index[row]},\n"
        f"{folder},,,{proj.series.sop_instance_uids[row]}\n"
    )
    records = read_scan_list(csv)
    assert {label_from_record(r, proj) for r in records} == {(float(proj.z_mm[row]), True)}
    cache = tmp_path / "cache"
    summary = bc.build_cache(
        bc.record_jobs(records[1:2], cache, TINY_SPACE, "float32"), cache, TINY_SPACE, progress=False
    )
    assert summary["cached"] == 1 and summary["failed"] == 0
    space, (scan,) = load_cache(cache)
    assert space == TINY_SPACE and scan.in_view and scan.truth_slice() == row

    seen = []
    monkeypatch.setattr(core, "normalize", lambda image, sp: seen.append(image) or pl.normalize(image, sp))
    result = loc.L3Locator.load(tiny_model).predict(folder)
    np.testing.assert_array_equal(scan.image, seen[0])
    assert scan.grid.row_to_z(0) == pytest.approx(float(proj.z_mm[0]) + 2.5 - 2.0 + 16 * 4.0)

    rep = ev.evaluate(tiny_model, cache)
    r = rep["scans"][0]
    assert r["found"] and r["pred_z_mm"] == result.z_mm and r["error_slices"] <= 1
    assert "| method |" in rep["table"]


def test_phantom_folders(tmp_path: Path) -> None:
    """DICOM and NIfTI phantom folders (truth.json) are labelled from their truth."""
    from l3edge.phantom.writers import write_phantom

    small = {
        "region": "abdomen",
        "matrix": 48,
        "pixel_spacing_mm": 8.0,
        "slice_spacing_mm": 10.0,
        "slice_thickness_mm": 10.0,
    }
    truths = [
        write_phantom(tmp_path / "ph" / "a", 5, **small),
        write_phantom(tmp_path / "ph" / "b", 6, fmt="nifti", **small),
    ]
    records = gather_records([tmp_path / "ph"])
    assert [r.phantom for r in records] == [True, True]
    cache = tmp_path / "cache"
    summary = bc.build_cache(
        bc.record_jobs(records, cache, default_space(), "int16"), cache, default_space(), progress=False
    )
    assert summary["cached"] == 2, summary
    _, scans = load_cache(cache)
    for scan, truth in zip(sorted(scans, key=lambda s: s.meta["path"]), truths, strict=True):
        assert scan.in_view == truth.l3_in_view and scan.label_z_mm == pytest.approx(truth.l3_z_mm)
        assert scan.z_slices.size == truth.n_slices and scan.meta["vertebrae"]["L3"]["row_top"] is not None
        assert scan.image.dtype == np.float32 and np.all(scan.image == np.rint(scan.image))


# --- phantom fast path, training, evaluation --------------------------------------------------------------


def _phantom_cache_args(out: Path) -> list[str]:
    return [
        "--phantoms",
        "6",
        "--seed",
        "3",
        "--region-mix",
        "abdomen=3,l3_top=1",
        "--out",
        str(out),
        "--quiet",
    ]


@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "phantoms"
    assert bc.main(_phantom_cache_args(out)) == 0
    return out


def test_phantom_cache_is_resumable(phantom_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = json.loads((phantom_cache / "index.json").read_text())
    assert len(index["scans"]) == 6 and index["info"]["kind"] == "phantom-fast"
    m = index["scans"][0]
    assert {"label_row", "in_view", "z0_mm", "region", "variants", "vertebrae", "n_slices"} <= set(m)
    assert m["region"] in ("abdomen", "l3_top") and "L3" in m["vertebrae"]
    capsys.readouterr()
    assert bc.main(_phantom_cache_args(phantom_cache)) == 0
    assert json.loads(capsys.readouterr().out)["skipped_existing"] == 6
    with pytest.raises(UsageError, match="another model space"):
        bc.build_cache([], phantom_cache, default_space("windows"), progress=False)


def test_sampler_targets(phantom_cache: Path) -> None:
    space, scans = load_cache(phantom_cache)
    sampler = StripBatches(scans, space, 6, p_positive=1.0, aug=AugmentConfig(enabled=False))
    x, off, pres, mask, known = sampler.batch(np.random.default_rng(0))
    assert x.shape == (6, 3, 80 + 16 * 7, 64) and off.shape == pres.shape == known.shape == (6, 1, 8)
    assert known.all()  # a phantom's L3 is always known: in view or known absent
    h = space.window_height_px
    np.testing.assert_array_equal(pres, ((off >= 0) & (off < h)) * mask.any(2, keepdims=True))
    np.testing.assert_allclose(np.diff(off, axis=2)[mask.any(2)], -16, atol=1e-4)  # one output per 16 rows
    if any(s.in_view for s in scans):
        assert pres.any()


def test_multi_level_targets_follow_the_rib_count(phantom_cache: Path) -> None:
    from tools.levels import MODEL_LEVELS, level_labels, rib_relative

    # The lowest rib-bearing vertebra is "T12" whatever its number from the top.
    eleven = {"T10": 1, "T11": 2, "L1": 3, "S1": 4}
    assert rib_relative(eleven) == {"T11": 1, "T12": 2, "L1": 3, "S1": 4}
    thirteen = {"T12": 1, "T13": 2, "L1": 3}
    assert rib_relative(thirteen) == {"T11": 1, "T12": 2, "L1": 3}
    space, scans = load_cache(phantom_cache)
    sampler = StripBatches(
        scans, space, 6, p_positive=1.0, aug=AugmentConfig(enabled=False), levels=MODEL_LEVELS
    )
    x, off, pres, mask, known = sampler.batch(np.random.default_rng(1))
    assert off.shape == (6, len(MODEL_LEVELS), 8) and known.all()
    h = space.window_height_px
    assert np.all(pres <= ((off >= 0) & (off < h)))
    # offsets of consecutive levels differ by their distance: superior levels have smaller rows
    lab = level_labels(scans[0], MODEL_LEVELS)
    rows = lab.rows[np.isfinite(lab.rows)]
    assert np.all(np.diff(rows) > 0) and lab.known.all()


def test_train_evaluate_smoke(phantom_cache: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    metrics = tr.train(phantom_cache, "cnn4", ckpt, steps=40, lr=3e-3, val_frac=0.34, augment=False, **QUICK)
    assert metrics["steps_done"] == 40 and metrics["loss_last"] < metrics["loss_first"]
    assert metrics["val"] is not None and metrics["n_val"] == 2
    saved = torch.load(ckpt, weights_only=False)
    assert saved["config"]["seed"] == 0 and saved["metrics"]["best_step"] == metrics["best_step"]
    assert saved["widths"] == TINY_NET["widths"] and "phantoms" in saved["trained_on"]

    out = tmp_path / "report.json"
    assert ev.main([str(ckpt), "--cache", str(phantom_cache), "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    s = rep["summary"]
    for key in (
        "error_slices",
        "error_mm",
        "in_body_share",
        "wrongly_found",
        "wrongly_not_found",
        "ms_per_scan",
        "by_region",
        "by_variant",
        "n_in_view",
    ):
        assert key in s
    assert set(s["error_mm"]) == {"mean", "sd", "median", "max", "n"}
    assert len(rep["scans"]) == 6 and rep["model"]["params"] > 0


def test_deterministic(phantom_cache: Path) -> None:
    space, scans = load_cache(phantom_cache)
    a = tr.train_on(scans, space, "cnn4", steps=3, val_frac=0, **QUICK)[0]
    b = tr.train_on(scans, space, "cnn4", steps=3, val_frac=0, **QUICK)[0]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_time_budget_stops_cleanly(phantom_cache: Path, tmp_path: Path) -> None:
    m = tr.train(phantom_cache, "cnn4", tmp_path / "t.pt", steps=10_000, time_budget_min=1e-5, **QUICK)
    assert m["stopped"] == "time" and m["steps_done"] < 10_000 and (tmp_path / "t.pt").is_file()


def test_init_continues_from_checkpoint(phantom_cache: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.pt"
    tr.train(phantom_cache, "cnn4", first, steps=3, val_frac=0, **QUICK)
    parent, _ = load_checkpoint(first)
    space, _ = load_cache(phantom_cache)
    cfg = tr.make_config(init=str(first), **QUICK)
    model = tr.new_model("cnn4", space, cfg)
    for (k, a), b in zip(model.state_dict().items(), parent.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(UsageError, match="another architecture or model space"):
        tr.new_model("cnn4", default_space("windows"), cfg)


def test_fine_tune(phantom_cache: Path) -> None:
    space, _ = load_cache(phantom_cache)
    model = build_model("cnn4", 80, 64, **TINY_NET)
    before = [p.detach().clone() for p in model.parameters()]
    out = tr.fine_tune(model, space, phantom_cache, steps=2, lr=1e-3, seed=0, device="cpu", batch=2)
    assert out is model and not out.training
    assert any(not torch.equal(a, b) for a, b in zip(before, out.parameters(), strict=True))
    with pytest.raises(UsageError, match="another model space"):
        tr.fine_tune(model, default_space("windows"), phantom_cache, steps=1, lr=1e-3, seed=0, device="cpu")


def test_cross_validation_holds_out(phantom_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained_on: list[set[str]] = []
    real = tr.train_on

    def spy(scans, *a, **kw):
        trained_on.append({s.id for s in scans})
        return real(scans, *a, **kw)

    monkeypatch.setattr(cv, "train_on", spy)
    rep = cv.cross_validate(phantom_cache, "cnn4", folds=3, steps=2, val_frac=0, **QUICK)
    ids = [r["id"] for r in rep["scans"]]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6
    for r in rep["scans"]:
        assert r["id"] not in trained_on[r["fold"]]
    assert rep["table"].splitlines()[2].startswith("| cnn4 (3-fold CV, stride 4) |")


# --- ImageNet weights -------------------------------------------------------------------------------------


def test_pretrained_from_file(tmp_path: Path) -> None:
    with torch.device("meta"):
        full = VGG16()
    full = full.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in full.features.parameters():
            p.normal_()
        for p in full.classifier.parameters():
            p.zero_()
    path = tmp_path / "vgg16.pth"
    torch.save(full.state_dict(), path)
    model = build_model("vgg16", 80, 64)
    assert tr.load_pretrained(model, "vgg16", str(path)) == 26
    for k, v in model.features.state_dict().items():
        assert torch.equal(v, full.features.state_dict()[k]), k
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(UsageError, match="not a torchvision VGG16"):
        tr.load_pretrained(model, "vgg16", str(tmp_path / "bad.pth"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(UsageError, match="not a torchvision VGG16"):
        tr.load_pretrained(model, "vgg16", str(tmp_path / "partial.pth"))
    with pytest.raises(UsageError, match="not found"):
        tr.load_pretrained(model, "vgg16", str(tmp_path / "missing.pth"))
    with pytest.raises(UsageError, match="vgg16"):
        tr.load_pretrained(build_model("cnn4", 80, 64), "cnn4", str(path))


def test_init_keeps_a_pruned_model_and_its_record(phantom_cache: Path, tmp_path: Path) -> None:
    from tools import prune as prune_mod
    from tools.checkpoint import save_checkpoint, sha256_file

    space, _ = load_cache(phantom_cache)
    parent = tmp_path / "parent.pt"
    save_checkpoint(parent, build_model("cnn4", 80, 64, widths=[8, 16, 16, 16], hidden=16), "cnn4", space)
    pruned = prune_mod.prune_checkpoint(parent, 0.5, tmp_path / "p50.pt", round_to=4)
    out = tmp_path / "p50_more.pt"
    tr.train(phantom_cache, "cnn4", out, steps=2, val_frac=0, init=str(pruned), batch=2, device="cpu")
    a, b = torch.load(pruned, weights_only=False), torch.load(out, weights_only=False)
    assert b["widths"] == a["widths"] != [8, 16, 16, 16] and b["pruning"]["ratio"] == 0.5
    assert b["parent_sha256"] == sha256_file(pruned)


def test_refiner_training_and_evaluation(phantom_cache: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "refiner.pt"
    common = ["--cache", str(phantom_cache), "--arch", "cnn4", "--steps", "2", "--val-frac", "0"]
    assert tr.main([*common, "--out", str(ckpt), "--band", "0.25", "0.75", "--presence-weight", "0"]) == 0
    assert torch.load(ckpt, weights_only=False)["config"]["band"] == (0.25, 0.75)
    coarse = tmp_path / "coarse.pt"
    assert tr.main([*common, "--out", str(coarse)]) == 0
    out = tmp_path / "rep.json"
    args = [str(coarse), "--cache", str(phantom_cache), "--json", str(out)]
    assert ev.main([*args, "--refine-cache", str(phantom_cache), "--refiner", str(ckpt)]) == 0
    assert json.loads(out.read_text())["model"]["refiner"] == str(ckpt)
    with pytest.raises(UsageError, match="not a refiner"):
        pl.load_refiner(coarse, phantom_cache)


def test_fast_phantom_rows_are_sampled_at_the_slices() -> None:
    z_rows = np.array([10.0, 9.0, 8.0, 7.0])
    mip = np.arange(8, dtype=np.float32).reshape(4, 2)
    from tools.cache_writer import sample_rows

    got = sample_rows(mip, z_rows, np.array([9.5, 7.0, 10.0]))
    np.testing.assert_allclose(got, [[1, 2], [6, 7], [0, 1]])


def test_e2e_runs_the_runtime_against_truth(tiny_model: Path, dicom_series: Any, tmp_path: Path) -> None:
    from tests.tiny_model import band_volume_z
    from tools import e2e

    z = band_volume_z()
    band_z = float(z[[20, 21]].mean())
    for name, band, in_view in (("present", (20, 21), True), ("absent", None, False)):
        folder = dicom_series(name, band_rows=band)
        truth = {
            "region": "abdomen",
            "variants": [],
            "l3_in_view": in_view,
            "l3_z_mm": band_z if in_view else None,
            "l3_z_true_mm": band_z,
            "scan_z_range": [float(z[-1]), float(z[0])],
            "n_slices": len(z),
            "slice_spacing_mm": 5.0,
            "vertebrae": {"L3": {"z_top": band_z + 8, "z_bottom": band_z - 8, "z_center": band_z}},
        }
        (folder / "truth.json").write_text(json.dumps(truth))
    out = tmp_path / "e2e.json"
    root = folder.parent
    assert e2e.main([str(root), "--model", str(tiny_model), "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    s = rep["summary"]
    assert s["n_scans"] == 2 and s["n_in_view"] == 1 and s["wrongly_found"] == s["wrongly_not_found"] == 0
    assert s["error_mm"]["n"] == 1 and s["error_mm"]["mean"] < 3.0 and s["in_body_share"] == 1.0
    assert e2e.main([str(tmp_path / "nothing")]) == 2


def test_e2e_levels_read_level_results() -> None:
    """The runtime's levels are LevelResult objects (not dicts): each is scored against the truth."""
    from l3edge.result import LevelResult
    from tools import e2e

    verts = {n: {"z_top": z + 10, "z_bottom": z - 10, "z_center": z} for n, z in (("L3", 0.0), ("L4", -35.0))}
    found = {"L3": LevelResult(4.0, 4.0, 10, 11, None, 0.9)}
    rows = e2e._levels({"vertebrae": verts}, found, ("L3", "L4"), np.array([50.0, -80.0]))
    assert rows["L3"] == {"in_view": True, "found": True, "error_mm": 4.0, "in_body": True}
    assert rows["L4"]["in_view"] and not rows["L4"]["found"] and rows["L4"]["in_body"] is False
