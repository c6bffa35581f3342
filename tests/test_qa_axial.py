"""Axial thumbnails beside the QA pictures (``predict --qa-axial N``) and how the review page links them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from l3edge import batch
from l3edge.cli import app
from l3edge.errors import UsageError
from l3edge.options import PredictOptions
from l3edge.qa_axial import MIN_STEP_MM, TILE_H_PX, tile_rows
from l3edge.report import write_report

Factory = Callable[..., Path]


def _predict(model: Path, scans: list[Path], tmp_path: Path, each: int) -> list[dict[str, Any]]:
    out = tmp_path / f"results{each}.jsonl"
    options = {"qa_dir": str(tmp_path / f"qa{each}"), "qa_axial": each}
    list(batch.run([str(p) for p in scans], load={"model": model}, workers=1, options=options, out=out))
    return [json.loads(ln) for ln in out.read_text().splitlines()]


def test_thumbnails_around_each_level(tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> None:
    scans = [dicom_series("found_a"), dicom_series("absent", band_rows=None)]
    found, absent = _predict(tiny_model, scans, tmp_path, 2)
    assert found["found"] and not absent["found"]
    png = Path(found["qa_path"])
    g = json.loads(png.with_suffix(".json").read_text())
    ax = g["axial"]
    strip = png.with_name(ax["file"])
    assert ax["file"] == png.stem + "_axial.jpg" and strip.is_file()
    centre = g["slice_index"].index(found["slice_index"])
    assert centre in ax["row"] and len(ax["row"]) == len(set(ax["row"])) >= 3
    for r, k, z in zip(ax["row"], ax["slice_index"], ax["z_mm"], strict=True):  # each tile is named
        assert g["slice_index"][r] == k and g["z_mm"][r] == pytest.approx(z)
    with Image.open(strip) as im:
        assert im.size == (ax["tile_w"] * len(ax["row"]), TILE_H_PX)
    assert g["axial_view"]["x"] > g["mip"]["w"] and g["axial_view"]["h"] > 0  # the picture's own slice
    assert found["timings_ms"]["qa_axial"] > 0
    # Nothing found: no thumbnails; off (the default): no strip, no entry, no timing.
    assert "axial" not in json.loads(Path(absent["qa_path"]).with_suffix(".json").read_text())
    (plain,) = _predict(tiny_model, scans[:1], tmp_path, 0)
    assert "axial" not in json.loads(Path(plain["qa_path"]).with_suffix(".json").read_text())
    assert "qa_axial" not in plain["timings_ms"] and not list((tmp_path / "qa0").glob("*.jpg"))


def test_step_keeps_thin_slices_apart() -> None:
    z = -np.arange(200) * 0.625  # superior first, 0.625 mm slices
    proj = SimpleNamespace(z_mm=z)
    levels = {n: SimpleNamespace(z_mm=z[r]) for n, r in (("T10", 5), ("L1", 40), ("L3", 100))}
    result = SimpleNamespace(levels=levels, z_mm=z[100], level="L3")  # T10: too far from L3, left out
    rows = tile_rows(cast(Any, proj), cast(Any, result), 3)
    step = int(np.ceil(MIN_STEP_MM / 0.625))
    assert rows == sorted({40 + i * step for i in range(-3, 4)} | {100 + i * step for i in range(-3, 4)})
    edge = SimpleNamespace(levels={}, z_mm=z[1], level="L3")
    assert min(tile_rows(cast(Any, proj), cast(Any, edge), 3)) == 1  # rows outside the scan are dropped
    assert tile_rows(cast(Any, proj), cast(Any, result), 0) == []


def test_page_links_the_strips(tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> None:
    (found,) = _predict(tiny_model, [dicom_series("found_a")], tmp_path, 2)
    results = tmp_path / "results2.jsonl"
    sizes = {}
    for embed in (True, False):
        page_dir = tmp_path / f"page{embed}"
        page_dir.mkdir()
        page = write_report(results, page_dir / "report.html", embed=embed).path
        text = page.read_text()
        blob = json.loads(text.split('type="application/json">', 1)[1].split("</script>", 1)[0])
        t = blob["scans"][0]["g"]["ax"]["t"]
        assert not Path(t["f"]).is_absolute() and (page_dir / t["f"]).resolve().is_file()  # linked, relative
        assert "_axial.jpg" not in text.replace(t["f"], "")  # ... and never embedded
        sizes[embed] = len(text)
    # A strip gone (the page moved without the QA folder, or deleted): the card keeps its picture only.
    Path(found["qa_path"]).with_name(Path(found["qa_path"]).stem + "_axial.jpg").unlink()
    text = write_report(results, tmp_path / "again.html").path.read_text()
    blob = json.loads(text.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert "t" not in blob["scans"][0]["g"]["ax"] and "v" in blob["scans"][0]["g"]["ax"]


def test_option_checks(dicom_series: Factory, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="qa_dir"):
        PredictOptions(qa_axial=2)
    with pytest.raises(UsageError, match=">= 0"):
        PredictOptions(qa_dir=str(tmp_path), qa_axial=-1)
    r = CliRunner().invoke(app, ["predict", str(dicom_series("x")), "--qa-axial", "2"])
    assert r.exit_code == 2 and "--qa" in r.output


def test_nifti_slices_read_in_blocks(tmp_path: Path) -> None:
    """NIfTI thumbnails: the runs of nearby slices are read as blocks, value for value as one by one."""
    pytest.importorskip("nibabel")
    from l3edge.phantom import write_phantom
    from l3edge.scan import read_projection
    from l3edge.slices import slice_reader
    from tests.conftest import SMALL_PHANTOM

    write_phantom(tmp_path / "ph", 1, "nifti", "abdomen", **SMALL_PHANTOM)
    series = read_projection(tmp_path / "ph" / "phantom.nii.gz").series
    assert series is not None
    reader = slice_reader(series)
    kept = reader.read_axial(10)  # the QA picture's slice, kept
    rows = [3, 4, 5, 10, 40, 41, len(series.slice_index) - 1]
    many = reader.read_many(rows)
    assert many[10] is kept and sorted(many) == rows
    for r in rows:
        np.testing.assert_array_equal(many[r], slice_reader(series).read_axial(r))
