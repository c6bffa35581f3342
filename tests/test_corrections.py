"""corrections.csv against its results file: `l3edge export` and `build_cache --corrections` on good and bad
rows (one line each, exit 3, nothing written), duplicated rows (the later one wins, with a note)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from l3edge import batch
from l3edge.cli import app
from l3edge.corrections import COLUMNS, read_corrections
from l3edge.errors import InputError
from l3edge.report import read_results
from l3edge.review import results_key

Factory = Callable[..., Path]


@pytest.fixture
def cohort(tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> dict[str, Any]:
    scans = [str(dicom_series("a")), str(dicom_series("b"))]
    out = tmp_path / "results.jsonl"
    list(
        batch.run(
            scans, load={"model": tiny_model}, workers=1, options={"qa_dir": str(tmp_path / "qa")}, out=out
        )
    )
    rows = {Path(d["path"]).name: d for d in read_results(out)}
    geo = {n: json.loads(Path(d["qa_path"]).with_suffix(".json").read_text()) for n, d in rows.items()}
    return {"results": out, "rows": rows, "geo": geo, "key": results_key(out.name, rows.values())}


def write_csv(path: Path, rows: list[dict[str, Any]], key: str | None) -> Path:
    cols = [*COLUMNS, "results"] if key is not None else list(COLUMNS)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in rows:
            w.writerow({**({"results": key} if key is not None else {}), **r})
    return path


def row(c: dict[str, Any], name: str, decision: str = "correct", r: int = 5, **kw: Any) -> dict[str, Any]:
    d, g = c["rows"][name], c["geo"][name]
    base = {
        "path": d["path"],
        "series_instance_uid": d["series_instance_uid"],
        "level": "L3",
        "decision": decision,
    }
    if decision == "correct":
        base.update(
            z_mm=g["z_mm"][r], slice_index=g["slice_index"][r], sop_instance_uid=g["sop_instance_uid"][r]
        )
    return {**base, **kw}


def export(c: dict[str, Any], csv_path: Path, out: Path) -> Any:
    return CliRunner().invoke(
        app, ["export", str(c["results"]), "--corrections", str(csv_path), "--out", str(out)]
    )


def test_export_and_duplicates(cohort: dict[str, Any], tmp_path: Path) -> None:
    c = cohort
    g = c["geo"]["a"]
    f = write_csv(tmp_path / "c.csv", [row(c, "a", r=3), row(c, "b", "reject"), row(c, "a", r=7)], c["key"])
    r = export(c, f, tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert ": line 4 decides" in r.stderr and "again (line 2): the later row is used" in r.stderr
    assert "exported 1 slices" in r.stdout and "1 rejected" in r.stdout
    listing = list(csv.DictReader((tmp_path / "out" / "export.csv").read_text().splitlines()))
    assert [(x["decision"], int(x["slice_index"])) for x in listing] == [("correct", g["slice_index"][7])]
    # The file exported is the slice's own file, byte for byte.
    from l3edge.scan import read_projection

    series = read_projection(c["rows"]["a"]["path"]).series
    assert series is not None
    src = series.slice_files[7]
    assert (tmp_path / "out" / listing[0]["file"]).read_bytes() == src.read_bytes()


BAD = {
    "another results file": (
        lambda c: [row(c, "a")],
        "other.jsonl#0123456789ab",
        "made for another results file",
    ),
    "no scan of these results": (
        lambda c: [row(c, "a", path="/x/else")],
        None,
        "none of its 1 rows names a scan",
    ),
    "unknown path": (
        lambda c: [row(c, "a"), row(c, "b", path="/x/else")],
        "KEY",
        "line 3: /x/else is not a scan of",
    ),
    "level not placed": (
        lambda c: [row(c, "a", level="C7")],
        "KEY",
        "level 'C7' is not one the model places (L3)",
    ),
    "z outside": (
        lambda c: [row(c, "a", z_mm=9999.0, slice_index="", sop_instance_uid="")],
        "KEY",
        "z = 9999.0 mm is outside the scan",
    ),
    "unknown slice": (
        lambda c: [row(c, "a", z_mm="", slice_index=999, sop_instance_uid="")],
        "KEY",
        "slice_index 999 is not among the",
    ),
    "bad decision": (lambda c: [row(c, "a", decision="maybe")], "KEY", "decision 'maybe' is not one of"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_corrections(case: str, cohort: dict[str, Any], tmp_path: Path) -> None:
    make, key, message = BAD[case]
    rows = make(cohort)
    if key is not None:  # a good row besides the bad one
        rows = [*rows, row(cohort, "b", "reject")]
    f = write_csv(tmp_path / "c.csv", rows, cohort["key"] if key == "KEY" else key)
    out = tmp_path / "out"
    r = export(cohort, f, out)
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("l3edge: error: ") and message in lines[0], r.stderr
    assert not out.exists()  # nothing written, not even the folder
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_corrections(f, cohort["results"])  # before any scan is read again
    from tools.build_cache import main as build_cache

    cache = tmp_path / "cache"
    argv = ["--results", str(cohort["results"]), "--corrections", str(f), "--out", str(cache), "--quiet"]
    assert build_cache(argv) == 3 and not cache.exists()


def test_not_a_corrections_file(cohort: dict[str, Any], tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("path,z\n/a,1\n")
    r = export(cohort, f, tmp_path / "out")
    assert (
        r.exit_code == 3
        and "not a corrections file (no column series_instance_uid, level, decision)" in r.stderr
    )
    r = export(cohort, tmp_path / "absent.csv", tmp_path / "out")
    assert r.exit_code == 3 and "cannot read the corrections file" in r.stderr


def test_cache_of_a_review_follows_its_changes(cohort: dict[str, Any], tmp_path: Path) -> None:
    """build_cache --corrections: labels from the rows; a decision changed since leaves one entry, the new."""
    from tools.build_cache import main as build_cache
    from tools.data import read_index

    c, cache = cohort, tmp_path / "cache"
    g = c["geo"]["a"]
    for r in (3, 9):
        f = write_csv(tmp_path / f"c{r}.csv", [row(c, "a", r=r), row(c, "b", "reject")], c["key"])
        argv = ["--results", str(c["results"]), "--corrections", str(f), "--out", str(cache), "--quiet"]
        assert build_cache(argv) == 0
    scans = {Path(m["path"]).name: m for m in read_index(cache)["scans"]}
    assert sorted(scans) == ["a", "b"] and len(list(cache.glob("*.npz"))) == 2
    assert scans["a"]["in_view"] and scans["a"]["label_z_mm"] == pytest.approx(g["z_mm"][9], abs=1e-3)
    assert not scans["b"]["in_view"]
    other = tmp_path / "other"
    assert build_cache(["--phantoms", "1", "--out", str(other), "--quiet"]) == 0
    assert build_cache([*argv[:4], "--out", str(other), "--quiet"]) == 2  # not a review's cache: left alone
