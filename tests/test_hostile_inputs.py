"""Hostile inputs (issue 6): one clear line and the right exit code, never a crash, traceback or PHI leak."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from l3edge.errors import InputError
from l3edge.scan import read_projection
from tests.dicom_factory import make_volume, write_series
from tests.hostile_factory import KINDS, Hostile

SCAN_KINDS = [k for k in KINDS if k.target == "scan"]
TIME_LIMIT_S = 10.0


def _build(kind: Hostile, tmp_path: Path) -> Path:
    reason = kind.skip()
    if reason:
        pytest.skip(reason)
    tmp_path.mkdir(parents=True, exist_ok=True)
    return kind.build(tmp_path)


def test_at_least_thirty_kinds() -> None:
    assert len(KINDS) >= 30
    assert len({k.name for k in KINDS}) == len(KINDS)


@pytest.mark.parametrize("kind", SCAN_KINDS, ids=lambda k: k.name)
def test_library_level(kind: Hostile, tmp_path: Path) -> None:
    path = _build(kind, tmp_path)
    t0 = time.perf_counter()
    if kind.exit_code == 0:
        proj = read_projection(path)
        assert proj.n_slices >= 2
        if kind.fragment:
            assert any(kind.fragment in w for w in proj.series.warnings), proj.series.warnings
    else:
        with pytest.raises(InputError) as info:
            read_projection(path)
        message = str(info.value)
        assert "\n" not in message
        assert kind.fragment in message
        assert str(path) in message or str(path.name) in message  # names the scan (or the file in it)
    assert time.perf_counter() - t0 < TIME_LIMIT_S


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("L3EDGE_MODEL", raising=False)
    return CliRunner()


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _good_scan(tmp_path: Path, name: str = "good") -> Path:
    return write_series(tmp_path / name, make_volume(nz=8, ny=24, nx=32), seed=5).folder


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_cli(kind: Hostile, tmp_path: Path, tiny_model: Path, runner: CliRunner) -> None:
    from l3edge.cli import app

    built = _build(kind, tmp_path / "in")
    scan, model = (built, tiny_model) if kind.target == "scan" else (_good_scan(tmp_path), built)
    out = tmp_path / "results.jsonl"
    t0 = time.perf_counter()
    result = runner.invoke(app, ["predict", str(scan), "--model", str(model), "--json", "--out", str(out)])
    assert time.perf_counter() - t0 < TIME_LIMIT_S + 10
    assert result.exit_code == kind.exit_code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    err = _lines(result.stderr)
    if kind.exit_code == 0:
        assert err == []
        (row,) = [json.loads(ln) for ln in _lines(result.stdout)]
        assert row["error"] is None
        assert len(_lines(out.read_text())) == 1
        return
    assert len(err) == 1, err
    assert kind.fragment in err[0]
    named = scan if kind.target == "scan" else model
    assert named.name in err[0]
    if kind.target == "model":
        assert not out.exists() or out.read_text() == ""  # nothing half-written
    else:
        (row,) = [json.loads(ln) for ln in _lines(out.read_text())]  # a complete failure row
        assert kind.fragment in row["error"]


def test_cli_good_scans_alongside_bad_ones(tmp_path: Path, tiny_model: Path, runner: CliRunner) -> None:
    from l3edge.cli import app

    good1, good2 = _good_scan(tmp_path, "g1"), _good_scan(tmp_path, "g2")
    bad1 = tmp_path / "missing"
    bad2 = next(k for k in KINDS if k.name == "mixed_matrix_sizes").build(tmp_path / "bad")
    out = tmp_path / "all.jsonl"
    args = [
        "predict",
        str(good1),
        str(bad1),
        str(bad2),
        str(good2),
        "--model",
        str(tiny_model),
        "--json",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 3
    err = _lines(result.stderr)  # two workers: in the order the scans finish
    assert len(err) == 2
    assert any(f"{bad1}: " in e for e in err) and any("mixed matrix sizes" in e for e in err)
    rows = {r["path"]: r for r in map(json.loads, _lines(out.read_text()))}
    assert {p: r["error"] is None for p, r in rows.items()} == {
        str(good1): True, str(bad1): False, str(bad2): False, str(good2): True
    }  # fmt: skip
    assert sorted(json.loads(ln)["path"] for ln in _lines(result.stdout)) == sorted(rows)


PHI = ("DOE^JANE", "DOE", "JANE", "PID-12345", "19600101")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_no_phi_anywhere(
    tmp_path: Path,
    tiny_model: Path,
    runner: CliRunner,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from l3edge.cli import app

    scan = write_series(
        tmp_path / "patient", make_volume(nz=8, ny=24, nx=32), patient=("DOE^JANE", "PID-12345", "19600101")
    ).folder
    broken = write_series(
        tmp_path / "broken",
        make_volume(nz=4),
        patient=("DOE^JANE", "PID-12345", "19600101"),
        iop=(0, 1, 0, 0, 0, -1),
    ).folder
    # Library level, everything at DEBUG.
    caplog.set_level(logging.DEBUG)
    read_projection(scan)
    with pytest.raises(InputError) as info:
        read_projection(broken)
    texts = [caplog.text, str(info.value)]
    # CLI level: the CLI reconfigures root logging, so collect from the library loggers directly.
    collect = _Collect()
    for name in ("l3edge", "pydicom", "py.warnings"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logging.DEBUG)
        logger.addHandler(collect)
    out, qa = tmp_path / "res.jsonl", tmp_path / "qa"
    try:
        result = runner.invoke(
            app,
            [
                "predict",
                str(scan),
                str(broken),
                "--model",
                str(tiny_model),
                "--json",
                "--out",
                str(out),
                "--qa",
                str(qa),
                "-v",
                "--workers",
                "1",  # in this process, where the handlers above see the library's log records
            ],
        )
    finally:
        for name in ("l3edge", "pydicom", "py.warnings"):
            logging.getLogger(name).removeHandler(collect)
    assert result.exit_code == 3
    assert collect.lines, "no log records collected: the check would be vacuous"
    texts += [result.stdout, result.stderr, *collect.lines, out.read_text()]
    written = [
        p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and tmp_path / "patient" not in p.parents and tmp_path / "broken" not in p.parents
    ]
    for phi in PHI:
        for text in texts:
            assert phi not in text
        for blob in written:
            assert phi.encode() not in blob
