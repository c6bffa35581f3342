"""Prune, export and quantize a tiny L3Net end to end; the runtime loads the results.

Tolerances: FP32 IR vs torch 1e-4 of the output's largest magnitude; INT8 IR vs torch 25% of it plus a
correlation above 0.98 (a random 4-layer net quantized on 24 windows: the point is that it still computes the
same function, not its accuracy); pruned checkpoints reload bit-identical.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")

from l3edge.errors import ModelError, UsageError  # noqa: E402
from l3edge.metadata import RT_INFO_KEY, ModelMetadata, ModelSpace  # noqa: E402
from l3edge.preprocess import RowGrid, cut_windows, normalize  # noqa: E402
from l3edge.runtime import OVModel  # noqa: E402
from l3edge.sliding import predict_strip, predict_windows  # noqa: E402
from tools import export as export_mod  # noqa: E402
from tools import prune as prune_mod  # noqa: E402
from tools import quantize as quantize_mod  # noqa: E402
from tools import variants as variants_mod  # noqa: E402
from tools.checkpoint import load_checkpoint, save_checkpoint, sha256_file  # noqa: E402
from tools.data import CACHE_FORMAT, INDEX_NAME, make_meta, save_cached  # noqa: E402
from tools.models import build_model, describe  # noqa: E402

SPACE = ModelSpace(
    mm_per_px=4.0,
    window_height_px=80,
    window_width_px=64,
    intensity_windows=((100.0, 1500.0),) * 3,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    fill_hu=-1024.0,
    pad_px=40,
)
FP32_RTOL = 1e-4
INT8_RTOL = 0.25


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-6))


def torch_run(model):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.eval()(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    return run


def synthetic_scan(rng: np.random.Generator, rows: int, l3_row: int) -> np.ndarray:
    """A structured HU image: air, a soft-tissue body and a column of bright 'vertebrae'."""
    img = np.full((rows, SPACE.window_width_px), -1024.0, np.float32)
    img[SPACE.pad_px : rows - SPACE.pad_px, 8:56] = 40 + 30 * rng.standard_normal(
        (rows - 2 * SPACE.pad_px, 48)
    )
    for top in range(SPACE.pad_px + 4, rows - SPACE.pad_px - 8, 9):
        img[top : top + 7, 26:38] = 500 + 300 * rng.random() + (200 if abs(top - l3_row) < 5 else 0)
    return img


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny trained-shape checkpoint, its 0.5-pruned child, the FP32 IR of the child and a 3-scan cache."""
    d = tmp_path_factory.mktemp("compress")
    torch.manual_seed(0)
    model = build_model("cnn4", 80, 64, widths=[8, 16, 16, 16], hidden=16)
    ckpt = d / "tiny.pt"
    save_checkpoint(ckpt, model, "cnn4", SPACE, metrics={"val_mae_mm": 3.5}, trained_on="unit-test noise")
    pruned = prune_mod.prune_checkpoint(ckpt, 0.5, d / "tiny_p50.pt", round_to=4)
    xml = export_mod.export(pruned, d / "tiny_p50.xml", {"version": "0.0.1", "default_stride_px": 8})

    cache = d / "cache"
    cache.mkdir()
    rng = np.random.default_rng(0)
    ids = []
    for i, rows in enumerate((200, 240, 180)):
        grid = RowGrid(z0_mm=500.0, mm_per_px=SPACE.mm_per_px)
        l3 = 100 + 10 * i
        z_slices = grid.row_to_z(np.arange(SPACE.pad_px, rows - SPACE.pad_px))
        truth = {
            "vertebrae": {
                "L3": {"z_top_mm": float(grid.row_to_z(l3 - 4)), "z_bottom_mm": float(grid.row_to_z(l3 + 4))}
            }
        }
        meta = make_meta(
            f"scan{i}", "synthetic", "", "L3", grid, z_slices, float(grid.row_to_z(l3)), True, truth
        )
        save_cached(cache, meta, synthetic_scan(rng, rows, l3), z_slices, "float32")
        ids.append(meta)
    index = {"format": CACHE_FORMAT, "space": SPACE.to_dict(), "info": {}, "scans": ids, "failed": {}}
    (cache / INDEX_NAME).write_text(json.dumps(index))
    return {"dir": d, "ckpt": ckpt, "pruned": pruned, "xml": xml, "cache": cache}


# --- pruning ------------------------------------------------------------------------------------------------


def test_prune_shrinks_and_reloads_identically(work):
    parent, _ = load_checkpoint(work["ckpt"])
    pruned_live = prune_mod.prune_model(parent, SPACE, 0.5, round_to=4)
    assert describe(pruned_live) == {"widths": [4, 8, 8, 8], "hidden": 8, "outputs": 2}
    assert describe(parent)["widths"] == [8, 16, 16, 16]  # the input model is left alone
    reloaded, ckpt = load_checkpoint(work["pruned"])
    assert ckpt["parent_sha256"] == sha256_file(work["ckpt"])
    assert (
        ckpt["pruning"]["ratio"] == 0.5 and ckpt["pruning"]["params_after"] < ckpt["pruning"]["params_before"]
    )
    assert ckpt["pruning"]["parent_metrics"] == {"val_mae_mm": 3.5}
    x = np.random.default_rng(1).standard_normal((2, 3, 144, 64)).astype(np.float32)
    np.testing.assert_array_equal(torch_run(reloaded)(x), torch_run(pruned_live)(x))
    np.testing.assert_array_equal(
        torch_run(prune_mod.rebuild(pruned_live, "cnn4", SPACE))(x), torch_run(reloaded)(x)
    )


def test_prune_keeps_output_conv_and_sweep_cli(work, tmp_path):
    prune_mod.main(
        [str(work["ckpt"]), "--ratio", "0.5", "0.75", "--round-to", "4", "--out", str(tmp_path / "p.pt")]
    )
    outs = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert outs == ["p_p50.pt", "p_p75.pt"]
    m, _ = load_checkpoint(tmp_path / "p_p75.pt")
    assert m.head[-1].out_channels == 2
    assert describe(m)["widths"] == [4, 4, 4, 4]  # 8 * 0.25 = 2 channels, rounded up to round_to


def test_prune_high_ratio_keeps_round_to_channels_in_every_layer():
    """torch-pruning alone would leave 64-channel layers unpruned at 0.9 (6.4 channels round to 0 of 8)."""
    model = build_model("vgg16", 80, 64)
    widths = describe(prune_mod.prune_model(model, SPACE, 0.9, round_to=8))["widths"]
    assert widths[:2] == [8, 8] and all(w % 8 == 0 and w <= 64 for w in widths[:7]) and max(widths) <= 56


def test_prune_rejects_bad_ratio(work):
    model, _ = load_checkpoint(work["ckpt"])
    with pytest.raises(ValueError, match="ratio"):
        prune_mod.prune_model(model, SPACE, 1.0)


# --- export -------------------------------------------------------------------------------------------------


def test_export_fp32_matches_torch(work):
    torch_model, _ = load_checkpoint(work["pruned"])
    ir = OVModel.load(work["xml"], inference_precision="f32")
    for shape in [(1, 3, 80, 64), (3, 3, 80, 64), (1, 3, 80 + 16 * 7, 64)]:
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        got, ref = ir.run(x), torch_run(torch_model)(x)
        assert got.shape == (shape[0], 2, (shape[2] - 80) // 16 + 1, 1)
        assert rel_err(got, ref) < FP32_RTOL


def test_metadata_round_trip(work):
    _, ckpt = load_checkpoint(work["pruned"])
    expected = export_mod.metadata_from_checkpoint(
        ckpt, sha256_file(work["pruned"]), version="0.0.1", default_stride_px=8
    )
    core_model = ov.Core().read_model(str(work["xml"]))
    got = ModelMetadata.from_json(core_model.get_rt_info(RT_INFO_KEY).astype(str))
    assert got == expected
    assert OVModel.load(work["xml"]).metadata == expected
    assert got.name == "l3edge-cnn4-p50-fp32" and got.architecture == "cnn4-pruned0.50"
    assert got.precision == "fp32" and got.output_stride_px == 16 and got.space == SPACE
    assert got.extra["widths"] == [4, 8, 8, 8] and got.extra["hidden"] == 8
    assert got.trained_on == "unit-test noise"


def test_export_cli_overrides_and_onnx(work, tmp_path):
    out = tmp_path / "m.xml"
    export_mod.main(
        [
            str(work["ckpt"]),
            "--out",
            str(out),
            "--name",
            "custom",
            "--version",
            "2.0",
            "--stride",
            "2",
            "--threshold",
            "0.7",
            "--onnx",
        ]
    )
    meta = OVModel.load(out).metadata
    assert (meta.name, meta.version, meta.default_stride_px, meta.presence_threshold) == (
        "custom",
        "2.0",
        2,
        0.7,
    )
    assert out.with_suffix(".onnx").is_file() and out.with_suffix(".bin").is_file()
    with pytest.raises(ValueError, match="unknown metadata"):
        export_mod.export(work["ckpt"], tmp_path / "x.xml", {"colour": "red"})


def test_runtime_refuses_ir_without_metadata(work, tmp_path):
    torch_model, _ = load_checkpoint(work["pruned"])
    bare = tmp_path / "bare.xml"
    ov.save_model(export_mod.to_openvino(torch_model, SPACE), str(bare), compress_to_fp16=False)
    with pytest.raises(ModelError, match="metadata"):
        OVModel.load(bare)
    with pytest.raises(ModelError):
        export_mod.read_metadata(bare)


def test_strip_and_window_paths_on_ir(work):
    """Same window tops both ways; each path matches torch; a one-window strip equals the window.

    The two paths are not equal in general: in a strip the 3x3 convolutions see the rows around a window,
    in a lone window they see zero padding.
    """
    torch_model, _ = load_checkpoint(work["pruned"])
    ir = OVModel.load(work["xml"], inference_precision="f32")
    channels = normalize(synthetic_scan(np.random.default_rng(3), 200, 100), SPACE)
    for stride in (4, 16, 32):
        t_s, p_s = predict_strip(ir.run, channels, 80, stride, 16)
        t_w, p_w = predict_windows(ir.run, channels, 80, stride)
        np.testing.assert_array_equal(t_s, t_w)
        assert rel_err(p_s, predict_strip(torch_run(torch_model), channels, 80, stride, 16)[1]) < FP32_RTOL
        assert rel_err(p_w, predict_windows(torch_run(torch_model), channels, 80, stride)[1]) < FP32_RTOL
    one = channels[:, 40:120]
    np.testing.assert_allclose(
        predict_strip(ir.run, one, 80, 4, 16)[1], predict_windows(ir.run, one, 80, 4)[1], rtol=1e-5, atol=1e-6
    )


# --- quantization -------------------------------------------------------------------------------------------


def test_calibration_windows_are_real_cache_windows(work):
    scans = quantize_mod.load_scans(work["cache"], SPACE)
    assert [s.id for s in scans] == ["scan0", "scan1", "scan2"]
    wins = quantize_mod.calibration_windows(scans, SPACE, 24, stride=4, seed=0)
    again = quantize_mod.calibration_windows(scans, SPACE, 24, stride=4, seed=0)
    assert len(wins) == 24 and all(w.shape == (1, 3, 80, 64) and w.dtype == np.float32 for w in wins)
    assert all(np.array_equal(a, b) for a, b in zip(wins, again, strict=True))
    # every window is a cut of a normalised cached scan at a multiple of the stride
    channels = [normalize(s.image, SPACE) for s in scans]
    for w in wins[:5]:
        hits = [
            t
            for c in channels
            for t in range(0, c.shape[1] - 79, 4)
            if np.array_equal(cut_windows(c, np.array([t]), 80), w)
        ]
        assert hits
    with pytest.raises(UsageError, match="model space"):
        quantize_mod.load_scans(work["cache"], dataclasses.replace(SPACE, mm_per_px=2.0))


def test_quantize_int8_keeps_metadata_and_function(work, tmp_path):
    out = quantize_mod.quantize_ir(work["xml"], work["cache"], tmp_path / "q.xml", subset=24)
    q_model = ov.Core().read_model(str(out))
    assert any(op.get_type_name() == "FakeQuantize" for op in q_model.get_ops())
    fp32 = OVModel.load(work["xml"]).metadata
    meta = OVModel.load(out).metadata
    assert meta.precision == "int8" and meta.name == "l3edge-cnn4-p50-int8"
    assert meta.extra["quantization"]["calibration_windows"] == 24
    assert meta.space == fp32.space and meta.parent_sha256 == fp32.parent_sha256
    assert meta.default_stride_px == fp32.default_stride_px == 8
    torch_model, _ = load_checkpoint(work["pruned"])
    channels = normalize(synthetic_scan(np.random.default_rng(4), 200, 110), SPACE)
    x = cut_windows(channels, np.arange(0, 120, 8), 80)
    got, ref = OVModel.load(out).run(x), torch_run(torch_model)(x)
    assert rel_err(got, ref) < INT8_RTOL and np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98


def _fake_quantized_convs(xml: object) -> set[str]:
    """Convolutions whose weights or input come through a FakeQuantize (directly or via a Convert)."""
    out = set()
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        for inp in op.inputs():
            src = inp.get_source_output().get_node()
            while src.get_type_name() in ("Convert", "Multiply", "Subtract", "Reshape"):
                src = src.input_value(0).get_node()
            low = src.get_output_element_type(0).get_type_name() == "i8"
            if src.get_type_name() == "FakeQuantize" or low:
                out.add(op.get_friendly_name())
    return out


def test_quantize_keeps_the_window_head_fp32_unless_asked(work, tmp_path):
    kept = quantize_mod.quantize_ir(work["xml"], work["cache"], tmp_path / "k.xml", subset=16)
    heads = OVModel.load(kept).metadata.extra["quantization"]["fp32_ops"]
    assert heads and all(n.startswith("/head/") for n in heads)
    quantized = _fake_quantized_convs(kept)
    assert quantized and not quantized & set(heads)  # the trunk is INT8, the head is not
    full = quantize_mod.quantize_ir(work["xml"], work["cache"], tmp_path / "f.xml", subset=16, int8_head=True)
    assert set(heads) <= _fake_quantized_convs(full)
    assert OVModel.load(full).metadata.extra["quantization"]["fp32_ops"] == []


def test_quantize_accuracy_aware_cli(work, tmp_path):
    out = tmp_path / "qa.xml"
    quantize_mod.main(
        [
            str(work["xml"]),
            "--cache",
            str(work["cache"]),
            "--out",
            str(out),
            "--subset",
            "16",
            "--accuracy-aware",
            "--max-drop-mm",
            "0.5",
            "--val-scans",
            "scan0",
            "scan1",
        ]
    )
    q = OVModel.load(out).metadata.extra["quantization"]
    assert q["val_scans"] == 2 and q["max_drop_mm"] == 0.5
    assert np.isfinite(q["val_cost_mm_fp32"]) and np.isfinite(q["val_cost_mm_int8"])
    assert q["tool"].endswith("quantize_with_accuracy_control")


# --- report -------------------------------------------------------------------------------------------------


def test_variants_table(work, tmp_path):
    q = quantize_mod.quantize_ir(work["xml"], work["cache"], tmp_path / "q.xml", subset=16)
    out_json = tmp_path / "rows.json"
    variants_mod.main(
        [
            str(work["ckpt"]),
            str(work["xml"]),
            str(q),
            "--cache",
            str(work["cache"]),
            "--seconds",
            "0.05",
            "--json",
            str(out_json),
        ]
    )
    rows = json.loads(out_json.read_text())
    assert [r["precision"] for r in rows] == ["fp32", "fp32", "int8"]
    assert rows[0]["params"] > rows[1]["params"] == rows[2]["params"]
    assert rows[0]["inference_precision"] == "f32"
    assert all(r["windows_per_s"] > 0 and r["in_view"] == 3 and r["cost_mm"] >= 0 for r in rows)
    table = variants_mod.markdown(rows)
    assert table.count("\n") == 4 and "MAE mm" in table


def test_prune_with_recovery_fine_tune(work, tmp_path):
    out = prune_mod.prune_checkpoint(
        work["ckpt"], 0.5, tmp_path / "ft.pt", round_to=4, finetune_steps=2, cache_dir=work["cache"], lr=1e-3
    )
    tuned, ckpt = load_checkpoint(out)
    untuned, _ = load_checkpoint(work["pruned"])
    assert describe(tuned) == describe(untuned) and ckpt["pruning"]["finetune_steps"] == 2
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(tuned.state_dict().values(), untuned.state_dict().values(), strict=True)
    )
    assert changed


def test_refiner_export_attach_and_quantize(work, tmp_path):
    ref_dir, main_dir, q_dir = (tmp_path / d for d in ("ref", "main", "q"))
    refiner = export_mod.main(
        [str(work["ckpt"]), "--out", str(ref_dir / "ref.xml"), "--name", "tiny-refiner"]
        + ["--refine-band", "0.25", "0.75", "--refine-shifts-px", "-4", "4"]
    )
    assert refiner is None
    rmeta = OVModel.load(ref_dir / "ref.xml").metadata
    assert rmeta.is_refiner and rmeta.refine_band == (0.25, 0.75) and rmeta.refine_shifts_px == (-4, 4)
    with pytest.raises(UsageError, match="not a L3 refiner"):
        export_mod.export(work["pruned"], main_dir / "bad.xml", refiner=work["xml"])
    main = export_mod.export(work["pruned"], main_dir / "main.xml", refiner=ref_dir / "ref.xml")
    assert OVModel.load(main).metadata.refiner == "ref.xml" and (main_dir / "ref.bin").is_file()
    q = quantize_mod.quantize_ir(main, work["cache"], q_dir / "q.xml", subset=8)
    assert OVModel.load(q).metadata.refiner == "ref.xml" and (q_dir / "ref.xml").is_file()
    from l3edge.locator import L3Locator

    loc = L3Locator.load(q)
    assert loc.refiner is not None and loc.refiner.metadata.name == "tiny-refiner"


# --- weight averaging ---------------------------------------------------------------------------------------


def test_average_is_the_mean_of_the_weights_and_refuses_other_networks(work, tmp_path):
    from pathlib import Path

    from tools import average as average_mod

    model, ck = load_checkpoint(work["pruned"])
    other = tmp_path / "other.pt"
    with torch.no_grad():
        shifted = {k: v + 1.0 for k, v in model.state_dict().items()}
        model.load_state_dict(shifted)
    save_checkpoint(other, model, ck["arch"], ck["space_obj"], pruning=ck.get("pruning"))
    out = tmp_path / "soup.pt"
    assert average_mod.main([str(work["pruned"]), str(other), "--out", str(out)]) == 0
    soup, sck = load_checkpoint(out)
    first, _ = load_checkpoint(work["pruned"])
    for name, v in soup.state_dict().items():
        torch.testing.assert_close(v, first.state_dict()[name] + 0.5)
    assert [s["file"] for s in sck["metrics"]["average_of"]] == [Path(work["pruned"]).name, "other.pt"]
    assert sck["pruning"] == ck["pruning"] and sck["widths"] == ck["widths"]
    assert average_mod.main([str(work["pruned"]), str(work["ckpt"]), "--out", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()
    assert average_mod.main([str(work["pruned"]), "--out", str(tmp_path / "y.pt")]) == 2


def test_quantize_bad_input_is_one_line_and_an_exit_code(work, tmp_path, capsys):
    out = str(tmp_path / "q.xml")
    assert quantize_mod.main([str(tmp_path / "nope.xml"), "--cache", str(work["cache"]), "--out", out]) == 2
    not_ir = tmp_path / "model.xml"
    not_ir.write_text("not an IR")
    assert quantize_mod.main([str(not_ir), "--cache", str(work["cache"]), "--out", out]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(ln.startswith("error: ") for ln in err)
