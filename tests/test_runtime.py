"""OVModel: model lookup, metadata checks, compilation options and the tiny model's known outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from l3edge.errors import ModelError
from l3edge.runtime import ENV_VAR, OVModel, load_metadata, resolve_model
from tests.tiny_model import WINDOW_H, WINDOW_W, metadata_with_schema, save_tiny_model


def test_load_and_metadata(tiny_model: Path) -> None:
    m = OVModel.load(tiny_model)
    assert m.metadata.name == "tiny-band"
    assert m.metadata.space.window_height_px == WINDOW_H
    assert m.inference_precision  # whatever OpenVINO chose, recorded
    assert load_metadata(tiny_model) == m.metadata


def test_run_dynamic_batch_and_height(tiny_model: Path) -> None:
    m = OVModel.load(tiny_model, threads=1, inference_precision="f32")
    assert m.inference_precision == "f32"
    x = np.zeros((3, 3, WINDOW_H, WINDOW_W), np.float32)
    x[:, :, 10] = 1.0  # a bright row 10 in every window
    out = m.run(x)
    assert out.shape == (3, 2, 1, 1)
    np.testing.assert_allclose(out[:, 0, 0, 0], 10.0, atol=0.05)  # offset = the band's row
    assert np.all(out[:, 1] > 0)  # present
    strip = m.run(np.zeros((1, 3, WINDOW_H + 16 * 4, WINDOW_W), np.float32))
    assert strip.shape == (1, 2, 5, 1)
    assert np.all(strip[:, 1] < 0)  # nothing bright: absent


def test_missing_metadata(tmp_path: Path) -> None:
    xml = save_tiny_model(tmp_path / "bare.xml", metadata=None)
    with pytest.raises(ModelError, match="no l3edge metadata"):
        OVModel.load(xml)


def test_unknown_schema_version(tmp_path: Path) -> None:
    xml = save_tiny_model(tmp_path / "v99.xml", metadata=metadata_with_schema(99))
    with pytest.raises(ModelError, match="schema version 99"):
        OVModel.load(xml)


def test_broken_metadata_json(tmp_path: Path) -> None:
    xml = save_tiny_model(tmp_path / "junk.xml", metadata="{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        OVModel.load(xml)


def test_missing_bin(tiny_model: Path, tmp_path: Path) -> None:
    xml = tmp_path / "nobin.xml"
    shutil.copy(tiny_model, xml)
    with pytest.raises(ModelError, match=r"nobin\.bin are missing"):
        OVModel.load(xml)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.onnx", b"\x08\x07", "not an OpenVINO IR"),
        ("model.xml", b"hello, not xml", "not an OpenVINO IR .xml"),
    ],
)
def test_not_an_ir(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        OVModel.load(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OVModel.load(tmp_path / "nope.xml")
    with pytest.raises(ModelError, match="is a folder"):
        OVModel.load(tmp_path)


def test_lookup_order(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tiny_model))
    assert resolve_model(tmp_path / "explicit.xml").source == "argument"
    env = resolve_model(None)
    assert env.path == tiny_model and env.source == f"env {ENV_VAR}"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setattr("l3edge.runtime._bundled_model", lambda: None)
    with pytest.raises(ModelError, match="no bundled model.*--model"):
        resolve_model(None)
    monkeypatch.setattr("l3edge.runtime._bundled_model", lambda: tiny_model)
    assert resolve_model(None).source == "bundled"


def test_static_ir_is_reshaped(tmp_path: Path) -> None:
    import openvino as ov

    from l3edge.metadata import RT_INFO_KEY
    from tests.tiny_model import build_tiny_ir, tiny_metadata

    model = build_tiny_ir()
    model.reshape({0: ov.PartialShape([1, 3, WINDOW_H, WINDOW_W])})
    model.set_rt_info(tiny_metadata().to_json(), RT_INFO_KEY)
    ov.save_model(model, str(tmp_path / "static.xml"))
    m = OVModel.load(tmp_path / "static.xml")
    assert m.run(np.zeros((4, 3, WINDOW_H + 16, WINDOW_W), np.float32)).shape == (4, 2, 2, 1)
    assert m.run(np.zeros((1, 3, WINDOW_H, WINDOW_W), np.float32)).shape == (1, 2, 1, 1)
