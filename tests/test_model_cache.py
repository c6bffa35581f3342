"""The compiled-model cache: where it lives, that it is used, that it is off when asked or when it cannot be
written, and that a changed model, another OpenVINO or a damaged blob never gives a stale answer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from l3edge import model_cache, runtime
from l3edge.cli import app
from l3edge.runtime import CACHE_ENV_VAR, OVModel, cache_folder, cache_root
from tests.conftest import write_band_series
from tests.tiny_model import WINDOW_H, WINDOW_W, save_tiny_model


def _band() -> np.ndarray:
    x = np.zeros((1, 3, WINDOW_H, WINDOW_W), np.float32)
    x[:, :, 10] = 1.0  # the tiny model answers the band's row (10) plus its offset bias
    return x


def _blobs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.blob"))


def test_where_the_cache_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_root() == tmp_path / "xdg" / "l3edge"
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"  # an explicit folder wins
    assert cache_root(False) is None
    for off in ("off", "OFF", "0", "false", "no"):
        monkeypatch.setenv(CACHE_ENV_VAR, off)
        assert cache_root() is None
        assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_a_second_load_uses_the_blob_the_first_wrote(tmp_path: Path) -> None:
    xml = save_tiny_model(tmp_path / "m.xml", offset_bias=1.0)
    cache = tmp_path / "cache"
    first = OVModel.load(xml, cache_dir=cache).run(_band())
    (blob,) = _blobs(cache)
    assert blob.parent == cache_folder(xml, xml.with_suffix(".bin"), cache)
    written = blob.stat().st_mtime_ns
    np.testing.assert_array_equal(OVModel.load(xml, cache_dir=cache).run(_band()), first)
    assert _blobs(cache) == [blob] and blob.stat().st_mtime_ns == written  # read, not written again


def test_a_model_changed_in_place_is_not_served_stale(tmp_path: Path) -> None:
    xml = tmp_path / "m.xml"
    cache = tmp_path / "cache"
    save_tiny_model(xml, offset_bias=1.0)
    old = OVModel.load(xml, cache_dir=cache).run(_band())
    save_tiny_model(xml, offset_bias=5.0)  # the same graph at the same path; only the weights (.bin) differ
    new = OVModel.load(xml, cache_dir=cache).run(_band())
    np.testing.assert_allclose(new[:, 0] - old[:, 0], 4.0, atol=1e-3)
    np.testing.assert_array_equal(new, OVModel.load(xml, cache_dir=False).run(_band()))
    assert len({b.parent for b in _blobs(cache)}) == 2  # one folder per model content


def test_a_blob_of_another_openvino_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = save_tiny_model(tmp_path / "m.xml", offset_bias=1.0)
    cache = tmp_path / "cache"
    OVModel.load(xml, cache_dir=cache)
    (mine,) = _blobs(cache)
    monkeypatch.setattr(runtime.ov, "get_version", lambda: "2099.1.0-1-abc")
    assert not cache_folder(xml, xml.with_suffix(".bin"), cache).samefile(mine.parent)
    OVModel.load(xml, cache_dir=cache)
    assert len(_blobs(cache)) == 2 and any("openvino-2099.1.0" in str(b) for b in _blobs(cache))


def test_a_damaged_blob_is_compiled_afresh(tmp_path: Path) -> None:
    xml = save_tiny_model(tmp_path / "m.xml", offset_bias=1.0)
    cache = tmp_path / "cache"
    good = OVModel.load(xml, cache_dir=cache).run(_band())
    (blob,) = _blobs(cache)
    for junk in (b"", b"junk" * 100, blob.read_bytes()[: blob.stat().st_size // 2]):
        blob.write_bytes(junk)
        np.testing.assert_array_equal(OVModel.load(xml, cache_dir=cache).run(_band()), good)


def test_no_cache_when_off_or_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = save_tiny_model(tmp_path / "m.xml")
    OVModel.load(xml, cache_dir=False)
    monkeypatch.setenv(CACHE_ENV_VAR, "off")
    OVModel.load(xml)
    assert _blobs(tmp_path) == []
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert cache_folder(xml, xml.with_suffix(".bin"), blocker / "cache") is None
    out = OVModel.load(xml, cache_dir=blocker / "cache").run(_band())  # compiled all the same
    assert out.shape == (1, 2, 1, 1)


def test_predict_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = save_tiny_model(tmp_path / "m.xml")
    scan = write_band_series(tmp_path / "scan")
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    args = ["predict", str(scan), "--model", str(xml), "--json", "--workers", "1"]
    r = CliRunner().invoke(app, [*args, "--no-cache"])
    assert r.exit_code == 0, r.output
    assert _blobs(tmp_path) == []
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(_blobs(cache)) == 1


def test_predict_reads_and_compiles_each_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model with a refiner, and --level (which checks the model's levels before loading it): each IR is
    parsed once and compiled once."""
    from dataclasses import replace

    from tests.tiny_model import tiny_metadata, tiny_refiner_metadata

    save_tiny_model(tmp_path / "refiner.xml", metadata=tiny_refiner_metadata())
    xml = save_tiny_model(tmp_path / "main.xml", metadata=replace(tiny_metadata(), refiner="refiner.xml"))
    scan = write_band_series(tmp_path / "scan")
    reads: list[str] = []
    compiles: list[str] = []
    read, compile_model = runtime.ov.Core.read_model, runtime.ov.Core.compile_model

    def counting_read(self: object, model: object, *a: object, **k: object) -> object:
        reads.append(Path(str(model)).name)
        return read(self, model, *a, **k)

    def counting_compile(self: object, model: object, *a: object, **k: object) -> object:
        compiles.append(model.get_friendly_name() if hasattr(model, "get_friendly_name") else str(model))
        return compile_model(self, model, *a, **k)

    monkeypatch.setattr(runtime.ov.Core, "read_model", counting_read)
    monkeypatch.setattr(runtime.ov.Core, "compile_model", counting_compile)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))  # not another test's cache of the same model
    args = ["predict", str(scan), "--model", str(xml), "--level", "L3", "--json", "--workers", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert '"found": true' in r.output
    assert sorted(reads) == ["main.xml", "refiner.xml"]
    assert len(compiles) == 2
    first = r.output
    reads.clear()
    compiles.clear()
    r = CliRunner().invoke(app, args)  # a warm cache: both compiled from their blobs, neither IR parsed
    assert r.exit_code == 0, r.output
    assert reads == [] and len(compiles) == 2
    assert _without_timings(r.output) == _without_timings(first)


def _without_timings(output: str) -> list[dict]:
    import json

    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    for row in rows:
        row.pop("timings_ms")
    return rows


def test_a_warm_cache_keeps_metadata_and_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second load takes the metadata from the cache and the content digest from its stat memo (the
    weights are not read); a damaged metadata file or a touched model file are read afresh."""
    xml = save_tiny_model(tmp_path / "m.xml", offset_bias=1.0)
    cache = tmp_path / "cache"
    first = OVModel.load(xml, cache_dir=cache)
    folder = cache_folder(xml, xml.with_suffix(".bin"), cache)
    assert folder is not None and (folder / model_cache.METADATA_FILE).is_file()
    assert len(list((cache / "digests").iterdir())) == 1
    reads: list[object] = []
    hashed: list[int] = []
    read, sha256 = runtime.ov.Core.read_model, model_cache.hashlib.sha256

    def counting_read(self: object, model: object, *a: object, **k: object) -> object:
        reads.append(model)
        return read(self, model, *a, **k)

    def counting_sha256(data: bytes = b"") -> object:
        hashed.append(len(data))
        return sha256(data)

    monkeypatch.setattr(runtime.ov.Core, "read_model", counting_read)
    monkeypatch.setattr(model_cache.hashlib, "sha256", counting_sha256)
    second = OVModel.load(xml, cache_dir=cache)
    assert reads == [] and max(hashed) < 1000  # only the stat key was hashed, never the weights
    assert second.metadata == first.metadata
    np.testing.assert_array_equal(second.run(_band()), first.run(_band()))
    assert runtime.load_metadata(xml, cache_dir=cache) == first.metadata and reads == []
    (folder / model_cache.METADATA_FILE).write_text("{not json")
    assert OVModel.load(xml, cache_dir=cache).metadata == first.metadata and len(reads) == 1
    xml.touch()  # a new mtime: the digest is computed again (the same content: the same folder)
    hashed.clear()
    assert cache_folder(xml, xml.with_suffix(".bin"), cache) == folder
    assert max(hashed) >= xml.with_suffix(".bin").stat().st_size
    assert len(list((cache / "digests").iterdir())) == 2
