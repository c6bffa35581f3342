"""The command line: exit codes, output formats, --out/--resume, --qa, info, model lookup."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from l3edge.cli import app
from l3edge.runtime import ENV_VAR
from tests.tiny_model import save_tiny_model

JSON_FIELDS = {
    "path", "found", "z_mm", "slice_index", "instance_number", "sop_instance_uid", "series_instance_uid",
    "n_slices", "confidence", "timings_ms", "model", "error",
}  # fmt: skip

Factory = Callable[..., Path]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv(ENV_VAR, raising=False)
    return CliRunner()


@pytest.fixture
def no_bundled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("l3edge.runtime._bundled_model", lambda: None)


def _stderr_lines(result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


def _json_lines(result) -> list[dict]:
    return [json.loads(ln) for ln in result.stdout.splitlines() if ln.strip()]


def test_help(runner: CliRunner) -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("predict", "info", "phantom", "demo"):
        assert cmd in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["predict"],
        ["predict", "x", "--mode", "fast"],
        ["predict", "x", "--stride", "0"],
        ["predict", "x", "--resume"],
        ["predict", "x", "--out", "results.txt"],
        ["predict", "x", "--nonsense"],
        ["predict", "x", "--level", "T12"],  # the tiny model places L3 only
    ],
)
def test_usage_errors_exit_2(runner: CliRunner, tiny_model: Path, args: list[str], tmp_path: Path) -> None:
    r = runner.invoke(app, [*args, "--model", str(tiny_model)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_model_without_metadata_exit_4(runner: CliRunner, tmp_path: Path) -> None:
    bare = save_tiny_model(tmp_path / "bare.xml", metadata=None)
    out = tmp_path / "results.jsonl"
    r = runner.invoke(app, ["predict", str(tmp_path), "--model", str(bare), "--out", str(out)])
    assert r.exit_code == 4
    lines = _stderr_lines(r)
    assert len(lines) == 1 and lines[0].startswith(f"l3edge: error: {bare}: ") and "metadata" in lines[0]
    assert not out.exists()  # nothing half-written
    assert r.stdout == ""


def test_no_model_at_all_exit_4(runner: CliRunner, no_bundled: None, tmp_path: Path) -> None:
    r = runner.invoke(app, ["predict", str(tmp_path)])
    assert r.exit_code == 4
    lines = _stderr_lines(r)
    assert len(lines) == 1 and "--model" in lines[0] and ENV_VAR in lines[0]
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 4 and len(_stderr_lines(r)) == 1


def test_info(runner: CliRunner, tiny_model: Path) -> None:
    r = runner.invoke(app, ["info", "--model", str(tiny_model)])
    assert r.exit_code == 0, r.output
    for text in (
        "tiny-band",
        "0.0.1",
        "fp32",
        "4 mm/px",
        "window 32 x 16 px",
        "16 px",
        "threshold",
        "nothing",
    ):
        assert text in r.stdout
    assert "found via argument" in r.stdout
    r = runner.invoke(app, ["info", "--model", str(tiny_model), "--json"])
    d = json.loads(r.stdout)
    assert d["name"] == "tiny-band" and d["schema_version"] == 1 and d["found_via"] == "argument"


def test_env_lookup(runner: CliRunner, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tiny_model))
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0 and f"found via env {ENV_VAR}" in r.stdout and str(tiny_model) in r.stdout


def test_predict_json(runner: CliRunner, tiny_model: Path, dicom_series: Factory) -> None:
    scan = dicom_series("scan")
    r = runner.invoke(app, ["predict", str(scan), "--model", str(tiny_model), "--json"])
    assert r.exit_code == 0, r.output
    (d,) = _json_lines(r)
    assert set(d) >= JSON_FIELDS
    assert d["path"] == str(scan) and d["found"] is True and d["error"] is None
    assert d["n_slices"] == 40 and d["slice_index"] in (18, 19) and d["instance_number"] in (21, 22)
    assert d["sop_instance_uid"] and d["series_instance_uid"]
    assert d["model"] == {"name": "tiny-band", "version": "0.0.1"}
    assert {"read_mip", "preprocess", "cnn", "postprocess"} <= set(d["timings_ms"])


def test_predict_human_and_env_model(
    runner: CliRunner, tiny_model: Path, dicom_series: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tiny_model))
    found, absent = dicom_series("found"), dicom_series("absent", band_rows=None)
    r = runner.invoke(app, ["predict", str(found), str(absent)])
    assert r.exit_code == 0, r.output
    out = sorted(r.stdout.splitlines())  # two workers: in the order they finish
    assert len(out) == 2 and out[0].startswith(f"{absent}: L3 not found") and "L3 at z =" in out[1]
    assert "[1/2]" in r.stderr and "[2/2]" in r.stderr  # progress on stderr
    assert "2 scans in" in r.stderr and "1 found, 1 not found, 0 review, 0 errors" in r.stderr  # summary


def test_unreadable_input_exit_3(
    runner: CliRunner, tiny_model: Path, dicom_series: Factory, tmp_path: Path
) -> None:
    good = dicom_series("good")
    missing = tmp_path / "missing"
    out = tmp_path / "results.jsonl"
    args = ["predict", str(missing), str(good), "--model", str(tiny_model), "--json", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 3
    lines = _stderr_lines(r)
    assert (
        len(lines) == 1 and lines[0].startswith(f"l3edge: error: {missing}: ") and "Traceback" not in r.stderr
    )
    rows = {x["path"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == sorted([str(missing), str(good)])  # in the order they finished
    assert rows[str(missing)]["error"] and rows[str(missing)]["found"] is False
    assert rows[str(good)]["found"] is True
    assert len(_json_lines(r)) == 2


def test_unexpected_exception_exit_3(
    runner: CliRunner, tiny_model: Path, dicom_series: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise ZeroDivisionError("synthetic failure")

    monkeypatch.setattr("l3edge.scan.open_scan", boom)
    scan = dicom_series()
    r = runner.invoke(app, ["predict", str(scan), "--model", str(tiny_model)])
    assert r.exit_code == 3
    assert _stderr_lines(r) == [f"l3edge: error: {scan}: ZeroDivisionError: synthetic failure"]
    r = runner.invoke(app, ["predict", str(scan), "--model", str(tiny_model), "-v"])
    assert r.exit_code == 3 and "Traceback" in r.stderr


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_out_and_resume(
    runner: CliRunner, tiny_model: Path, dicom_series: Factory, tmp_path: Path, suffix: str
) -> None:
    a, b = dicom_series("a"), dicom_series("b", band_rows=None)
    missing = tmp_path / "missing"
    out = tmp_path / f"results{suffix}"
    base = ["predict", "--model", str(tiny_model), "--out", str(out), "-q"]
    r = runner.invoke(app, [*base, str(a), str(missing)])
    assert r.exit_code == 3
    r = runner.invoke(app, [*base, "--resume", str(a), str(b), str(missing)])
    assert r.exit_code == 3
    assert r.stdout.count("\n") == 1  # only b was processed (and missing retried, which errors again)
    if suffix == ".csv":
        with out.open(newline="") as f:
            rows = list(csv.DictReader(f))
        (row_a,) = [x for x in rows if x["path"] == str(a)]
        assert row_a["found"] == "True" and row_a["error"] == "" and row_a["slice_index"] in ("18", "19")
    else:
        rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    # Two workers: rows come in the order scans finish, each run's rows after the previous run's.
    assert sorted(x["path"] for x in rows[:2]) == sorted([str(a), str(missing)])
    assert sorted(x["path"] for x in rows[2:]) == sorted([str(b), str(missing)])
    assert out.read_text().endswith("\n")


def test_out_cuts_a_partial_last_line(
    runner: CliRunner, tiny_model: Path, dicom_series: Factory, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text('{"path": "x", "found": false, "error": null}\n{"path": "half')
    r = runner.invoke(app, ["predict", str(dicom_series()), "--model", str(tiny_model), "--out", str(out)])
    assert r.exit_code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(ln) for ln in lines)


def test_qa(runner: CliRunner, tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> None:
    qa = tmp_path / "qa"
    r = runner.invoke(
        app, ["predict", str(dicom_series()), "--model", str(tiny_model), "--qa", str(qa), "--json"]
    )
    assert r.exit_code == 0, r.output
    (d,) = _json_lines(r)
    pngs = list(qa.glob("*.png"))
    assert len(pngs) == 1 and d["qa_path"] == str(pngs[0])
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_ct_series(runner: CliRunner, tiny_model: Path, shared_dir: Path) -> None:
    scan = shared_dir / "data" / "real_ct_t11_t12_dicom"
    if not scan.is_dir():
        pytest.skip(f"{scan} not present")
    r = runner.invoke(app, ["predict", str(scan), "--model", str(tiny_model), "--json"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["n_slices"] == 20 and d["error"] is None and d["series_instance_uid"]


def _write_phantom_available() -> bool:
    try:
        from l3edge.phantom import write_phantom  # noqa: F401
    except ImportError:
        return False
    return True


needs_phantom = pytest.mark.skipif(
    not _write_phantom_available(), reason="l3edge.phantom.write_phantom not written yet"
)


@needs_phantom
def test_phantom_and_demo(runner: CliRunner, tiny_model: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["phantom", str(tmp_path / "ph"), "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "wrote a dicom phantom" in r.stdout and "truth:" in r.stdout
    assert any((tmp_path / "ph").rglob("*"))
    r = runner.invoke(app, ["predict", str(tmp_path / "ph"), "--model", str(tiny_model), "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["demo", "--seed", "1", "--model", str(tiny_model)])
    assert r.exit_code == 0, r.output
    assert "phantom (seed 1)" in r.stdout and "l3edge:" in r.stdout


def test_refiner_and_no_refine(runner: CliRunner, dicom_series: Factory, tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.tiny_model import tiny_metadata, tiny_refiner_metadata

    save_tiny_model(tmp_path / "ref.xml", metadata=tiny_refiner_metadata(), offset_bias=3.0)
    xml = save_tiny_model(tmp_path / "main.xml", metadata=replace(tiny_metadata(), refiner="ref.xml"))
    scan = dicom_series("scan", spacing_mm=2.0)
    base = ["predict", str(scan), "--model", str(xml), "--json", "--precision", "f32"]
    (refined,) = _json_lines(runner.invoke(app, base))
    (plain,) = _json_lines(runner.invoke(app, [*base, "--no-refine"]))
    assert "refine" in refined["timings_ms"] and "refine" not in plain["timings_ms"]
    assert refined["z_mm"] == pytest.approx(plain["z_mm"] - 3.0, abs=1.0)
    r = runner.invoke(app, ["info", "--model", str(xml)])
    assert r.exit_code == 0 and "ref.xml" in r.stdout
    (tmp_path / "ref.bin").unlink()
    r = runner.invoke(app, base)
    assert r.exit_code == 4 and "ref.bin" in r.stderr


def test_predict_level_and_levels(runner: CliRunner, dicom_series: Factory, tmp_path: Path) -> None:
    from tests.tiny_model import save_tiny_multilevel_model

    xml = save_tiny_multilevel_model(tmp_path / "levels.xml")
    scan = dicom_series("scan", n_slices=60)
    r = runner.invoke(app, ["predict", str(scan), "--model", str(xml), "--json", "--level", "L4"])
    assert r.exit_code == 0, r.output
    (d,) = _json_lines(r)
    assert d["level"] == "L4" and d["found"] and set(d["levels"]) == {"L2", "L3", "L4"}
    assert d["z_mm"] == d["levels"]["L4"]["z_mm"] and isinstance(d["review"], bool)
    r = runner.invoke(app, ["predict", str(scan), "--model", str(xml), "--level", "L2"])
    assert r.exit_code == 0 and "L2 at z =" in r.stdout
    r = runner.invoke(app, ["predict", str(scan), "--model", str(xml), "--level", "S1"])
    assert r.exit_code == 2 and "places L2, L3, L4" in r.stderr and "Traceback" not in r.output


def test_from_list_and_patterns(
    runner: CliRunner, tiny_model: Path, dicom_series: Factory, tmp_path: Path
) -> None:
    a, b, c = dicom_series("scan_a"), dicom_series("scan_b"), dicom_series("other_c")
    listing = tmp_path / "cohort.csv"
    listing.write_text("path,note\nother_c,listed\nscan_a,listed twice: by the list and by the pattern\n")
    out = tmp_path / "r.jsonl"
    pattern, nothing = str(tmp_path / "scan_*"), str(tmp_path / "nothing_*")
    args = [
        "predict",
        pattern,
        nothing,
        "--from-list",
        str(listing),
        "--model",
        str(tiny_model),
        "--out",
        str(out),
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 3, r.output
    rows = {d["path"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == sorted([str(c), str(a), str(b), nothing])  # a once
    assert rows[nothing]["error"] == f"{nothing}: no file or folder matches this pattern"
    assert f"l3edge: error: {nothing}: no file or folder matches this pattern" in r.stderr
    r = runner.invoke(app, ["predict", "--model", str(tiny_model)])
    assert r.exit_code == 2 and "no scans given" in r.stderr
    r = runner.invoke(
        app, ["predict", "--from-list", str(tmp_path / "absent.txt"), "--model", str(tiny_model)]
    )
    assert r.exit_code == 2 and "cannot read the list" in r.stderr


def test_the_console_entry_exits_as_sys_exit_would(
    tiny_model: Path, dicom_series: Factory, tmp_path: Path
) -> None:
    """``main()`` ends the process without Python's teardown (os._exit): the exit codes, the output on a
    pipe, the --out rows and the atexit handlers are those of a usual exit."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    scan, out = dicom_series("s"), tmp_path / "rows.jsonl"
    code = (
        "import atexit, sys\natexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
        "from l3edge.cli import main\nsys.argv = ['l3edge', *sys.argv[1:]]\nmain()\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", code, *args]
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, check=False)

    ok = run("predict", str(scan), "--model", str(tiny_model), "--json", "--out", str(out), "--workers", "1")
    assert ok.returncode == 0, ok.stderr
    (row,) = [json.loads(ln) for ln in ok.stdout.splitlines()]
    assert row["found"] and [json.loads(ln) for ln in out.read_text().splitlines()] == [row]
    assert ok.stderr.strip().endswith("atexit ran")
    missing = run(
        "predict", str(tmp_path / "nowhere"), "--model", str(tiny_model), "--json", "--workers", "1"
    )
    assert (
        missing.returncode == 3 and "path does not exist" in missing.stderr and "atexit ran" in missing.stderr
    )
    usage = run("predict", "--stride", "0")
    assert usage.returncode == 2 and "atexit ran" in usage.stderr
    assert run("--version").stdout.strip().startswith("l3edge ")
