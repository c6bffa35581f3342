"""l3edge.batch: inputs, the in-process and process-pool back ends, faults, resume after kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from l3edge import batch
from l3edge.errors import ModelError, UsageError
from tests.faulty_scan import faulty, two_rows
from tests.tiny_model import save_tiny_model

Factory = Callable[..., Path]
ROOT = Path(__file__).resolve().parents[1]


def comparable(d: dict[str, Any]) -> dict[str, Any]:
    """A row without what legitimately differs between runs (timings; the QA picture's folder)."""
    d = dict(d)
    d.pop("timings_ms", None)
    if d.get("qa_path"):
        d["qa_path"] = Path(d["qa_path"]).name
    return d


def rows_by_path(results: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for r in results:
        d = r if isinstance(r, dict) else r.to_dict()
        assert d["path"] not in out, f"{d['path']} twice"
        out[d["path"]] = comparable(d)
    return out


# --- inputs -------------------------------------------------------------------------------------------------


def test_collect_paths_lists_globs_and_duplicates(tmp_path: Path) -> None:
    for name in ("a1", "a2", "b1"):
        (tmp_path / "scans" / name).mkdir(parents=True)
    lst = tmp_path / "lists" / "cohort.txt"
    lst.parent.mkdir()
    lst.write_text("# a comment\n../scans/a1\n\n  ../scans/b1  \n/abs/elsewhere\n")
    got = batch.collect_paths([str(tmp_path / "scans" / "a*"), str(tmp_path / "scans" / "b1")], lst)
    assert got == [
        str(lst.parent / "../scans/a1"),
        str(lst.parent / "../scans/b1"),
        "/abs/elsewhere",
        str(tmp_path / "scans" / "a2"),  # a1 (from the pattern) and b1 were listed already
    ]
    assert batch.collect_paths([str(tmp_path / "nothing*")]) == [
        str(tmp_path / "nothing*")
    ]  # kept: an error row


def test_collect_paths_csv(tmp_path: Path) -> None:
    good = tmp_path / "scans.csv"
    good.write_text("id,path,z_mm\n1,s1,-10\n2,/data/s2,\n3,,\n")
    assert batch.collect_paths([], good) == [str(tmp_path / "s1"), "/data/s2"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,folder\n1,s1\n")
    with pytest.raises(UsageError, match="'path' column"):
        batch.collect_paths([], bad)
    with pytest.raises(UsageError, match="cannot read"):
        batch.collect_paths([], tmp_path / "absent.txt")


# --- back ends ----------------------------------------------------------------------------------------------


def test_pool_gives_the_same_rows_as_in_process(phantom_cohort: list[Path], tmp_path: Path) -> None:
    paths = [str(p) for p in phantom_cohort]
    serial = list(batch.run(paths, workers=1, options={"qa_dir": tmp_path / "qa1"}))
    pooled = list(batch.run(paths, workers=2, options={"qa_dir": tmp_path / "qa2"}))
    assert rows_by_path(pooled) == rows_by_path(serial)
    assert sum(r.found for r in serial) == 3 and not any(r.error for r in serial)
    for r in serial:  # the pictures the workers wrote are the in-process ones, byte for byte
        assert r.qa_path is not None
        assert (tmp_path / "qa2" / Path(r.qa_path).name).read_bytes() == Path(r.qa_path).read_bytes()


def test_several_rows_for_one_input(tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> None:
    scans = [str(dicom_series(f"s{i}")) for i in range(3)]
    out = tmp_path / "r.jsonl"
    run = batch.run(scans, load={"model": tiny_model}, workers=2, scan=two_rows, out=out)
    outcomes = list(run.scans())
    assert sorted(o.path for o in outcomes) == sorted(scans)
    assert all(len(o.results) == 2 for o in outcomes)
    assert run.summary.scans == 3 and run.summary.rows == 6 and run.summary.found == 6
    assert len(out.read_text().splitlines()) == 6
    again = batch.run(scans, load={"model": tiny_model}, workers=2, scan=two_rows, out=out, resume=True)
    assert again.summary.skipped == 3 and list(again) == []


def test_worker_faults_cost_only_their_scan(tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> None:
    names = ["good1", "segv", "good2", "oom", "good3", "hang", "boom", "good4", "good5"]
    scans = {n: str(dicom_series(n)) for n in names}
    out = tmp_path / "r.jsonl"
    run = batch.run(
        list(scans.values()), load={"model": tiny_model}, workers=2, timeout=3, scan=faulty, out=out
    )
    outcomes = {o.path: o for o in run.scans()}
    assert sorted(outcomes) == sorted(scans.values())
    err = {n: outcomes[p].results[0].error for n, p in scans.items()}
    assert "SIGSEGV" in (err["segv"] or "") and "worker process" in (err["segv"] or "")
    assert "SIGKILL" in (err["oom"] or "") and "out of memory" in (err["oom"] or "")
    assert "timed out after 3 s" in (err["hang"] or "")
    assert err["boom"] == "RuntimeError: synthetic failure" and outcomes[scans["boom"]].traceback
    assert all(err[n] is None and outcomes[scans[n]].results[0].found for n in names if n.startswith("good"))
    assert run.exit_code == 3 and run.summary.errors == 4 and run.summary.found == 5
    assert len(out.read_text().splitlines()) == len(names)


def test_bad_model_fails_before_anything_is_written(dicom_series: Factory, tmp_path: Path) -> None:
    bare = save_tiny_model(tmp_path / "bare.xml", metadata=None)
    out = tmp_path / "r.jsonl"
    scans = [str(dicom_series("a")), str(dicom_series("b"))]
    for workers in (1, 2):
        with pytest.raises(ModelError, match="no l3edge metadata"):
            batch.run(scans, load={"model": bare}, workers=workers, out=out)
        assert not out.exists()


def test_usage_errors(tiny_model: Path) -> None:
    with pytest.raises(UsageError, match="resume"):
        batch.run(["x"], resume=True)
    with pytest.raises(UsageError, match="not both"):
        batch.run(["x"], workers=2, dask="tcp://127.0.0.1:1")
    with pytest.raises(UsageError, match="timeout"):
        batch.run(["x"], timeout=0)


def test_dask_missing_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the dask extra were not installed
    with pytest.raises(UsageError, match=r'pip install "l3edge\[dask\]"'):
        batch.run(["x"], load={"model": tiny_model}, dask="tcp://127.0.0.1:1")


def test_local_runs_never_import_dask(tiny_model: Path, dicom_series: Factory, tmp_path: Path) -> None:
    scans = [str(dicom_series("a")), str(dicom_series("b"))]
    code = (
        "import sys\n"
        "from l3edge import batch\n"
        "from l3edge.cli import app\n"
        "from typer.testing import CliRunner\n"
        "from tests.faulty_scan import report_modules\n"
        f"scans, model = {scans!r}, {str(tiny_model)!r}\n"
        "r = CliRunner().invoke(app, ['predict', *scans, '--model', model, '--workers', '2', '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "warnings = [w for x in batch.run(scans, load={'model': model}, workers=2, scan=report_modules)\n"
        "            for w in x.warnings]\n"
        "print(warnings)\n"
        "assert warnings == ['modules: none'] * 2, warnings\n"  # in the workers
        "assert 'dask' not in sys.modules and 'distributed' not in sys.modules\n"  # and here
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.strip().endswith("ok")


# --- kill -9 and --resume -----------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), "a partial line was left behind"
    return [json.loads(ln) for ln in text.splitlines()]


def _gone(pgid: int, within_s: float = 10.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_kill_9_then_resume_loses_and_duplicates_nothing(
    tiny_model: Path, dicom_series: Factory, tmp_path: Path
) -> None:
    scans = [str(dicom_series(f"s{i:02d}")) for i in range(30)]
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "l3edge.cli", "predict", *scans, "--model", str(tiny_model)]
    cmd += ["--workers", "2", "--out", str(out), "-q"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.002)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run: the parent and its workers at once
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _gone(proc.pid), "worker processes outlived the kill"
    before = _rows(out)
    print(f"killed after {len(before)} of {len(scans)} rows")
    assert 3 <= len(before) < len(scans), "the kill must interrupt the cohort"
    r = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    after = _rows(out)
    assert after[: len(before)] == before  # nothing rewritten
    assert sorted(d["path"] for d in after) == sorted(scans)  # every scan exactly once
    assert all(d["error"] is None and d["found"] for d in after)


def test_parent_killed_alone_lets_its_workers_exit(
    tiny_model: Path, dicom_series: Factory, tmp_path: Path
) -> None:
    """Only the parent gets SIGKILL: its workers see their pipes close and exit by themselves."""
    scans = [str(dicom_series(f"s{i:02d}")) for i in range(20)]
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "l3edge.cli", "predict", *scans, "--model", str(tiny_model)]
    cmd += ["--workers", "2", "--out", str(out), "-q"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not (out.exists() and out.read_bytes().count(b"\n") >= 1):
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _gone(proc.pid, 20.0), "workers kept running after their parent was killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
