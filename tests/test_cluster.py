"""The Dask back end on a real distributed.LocalCluster (2 worker processes): the same rows as the local pool,
the CLI's --dask, retries, timeouts, dead workers and a bad model."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from l3edge import batch
from l3edge.errors import ModelError
from tests.faulty_scan import faulty
from tests.test_batch import rows_by_path
from tests.tiny_model import save_tiny_model

pytest.importorskip(
    "distributed", reason='the Dask back end needs the dask extra: pip install "l3edge[dask]"'
)

Factory = Callable[..., Path]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    import dask
    from distributed import LocalCluster

    # A worker that dies holding a scan: the scheduler gives the scan one more worker, then gives up on it.
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port, not 8787
            silence_logs=logging.CRITICAL,
        ) as c,
    ):
        yield c


def test_same_rows_and_pictures_as_the_local_pool(
    cluster: Any, phantom_cohort: list[Path], tmp_path: Path
) -> None:
    paths = [str(p) for p in phantom_cohort]
    local = list(batch.run(paths, workers=2, options={"qa_dir": str(tmp_path / "qa_pool")}))
    remote = list(
        batch.run(paths, dask=cluster.scheduler_address, options={"qa_dir": str(tmp_path / "qa_dask")})
    )
    assert rows_by_path(remote) == rows_by_path(local)
    assert sum(r.found for r in remote) == 3
    for r in local:  # pictures written by the Dask workers
        assert r.qa_path is not None
        assert (tmp_path / "qa_dask" / Path(r.qa_path).name).read_bytes() == Path(r.qa_path).read_bytes()


def test_cli_dask_out_resume_and_env(
    cluster: Any, tiny_model: Path, dicom_series: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from l3edge.cli import app

    a, b, c = (str(dicom_series(n)) for n in "abc")
    missing = str(tmp_path / "missing")
    out = tmp_path / "r.jsonl"
    base = ["predict", "--model", str(tiny_model), "--out", str(out), "--qa", str(tmp_path / "qa")]
    r = CliRunner().invoke(app, [*base, a, b, missing, "--dask", cluster.scheduler_address])
    assert r.exit_code == 3, r.output
    assert "3 scans in" in r.stderr and "2 found, 0 not found, 0 review, 1 error" in r.stderr
    monkeypatch.setenv("L3EDGE_DASK", cluster.scheduler_address)
    r = CliRunner().invoke(app, [*base, "--resume", a, b, c, missing, "--json"])
    assert r.exit_code == 3  # missing is retried, and is still missing
    printed = [json.loads(ln)["path"] for ln in r.stdout.splitlines()]
    assert sorted(printed) == sorted([c, missing])
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert sorted(d["path"] for d in rows) == sorted([a, b, missing, c, missing])
    assert all(Path(d["qa_path"]).is_file() for d in rows if d["error"] is None)
    r = CliRunner().invoke(app, [*base, a, "--workers", "2"])
    assert r.exit_code == 2 and "--workers" in r.stderr  # local workers or a cluster, not both


def test_retry_once_then_error_row(cluster: Any, tiny_model: Path, dicom_series: Factory) -> None:
    boom, flaky, good = (str(dicom_series(n)) for n in ("boom", "flaky", "good"))
    run = batch.run(
        [boom, flaky, good], load={"model": tiny_model}, dask=cluster.scheduler_address, scan=faulty
    )
    rows = {o.path: o.results[0] for o in run.scans()}
    assert rows[flaky].error is None and rows[flaky].found  # failed once, retried, fine
    assert rows[good].error is None
    assert rows[boom].error == "failed on the Dask cluster (retried): RuntimeError: synthetic failure"
    assert Path(boom + ".attempts").read_text() == "1\n1\n"  # tried twice
    assert run.exit_code == 3


def test_timeout(cluster: Any, tiny_model: Path, dicom_series: Factory) -> None:
    scans = {n: str(dicom_series(n)) for n in ("hang", "good1", "good2")}
    run = batch.run(
        list(scans.values()),
        load={"model": tiny_model},
        dask=cluster.scheduler_address,
        scan=faulty,
        timeout=2,
    )
    rows = {o.path: o.results[0] for o in run.scans()}
    assert "timed out after 2 s" in (rows[scans["hang"]].error or "")
    assert rows[scans["good1"]].found and rows[scans["good2"]].found


def test_dead_worker(cluster: Any, tiny_model: Path, dicom_series: Factory) -> None:
    """A scan that kills every worker it runs on becomes an error row; the cluster recovers.

    Alone in its batch: Dask counts a worker's death against every scan that worker held, so with the
    fixture's allowed-failures of 1 a neighbour could be reported too (the default of 3 makes it unlikely).
    """
    segv = str(dicom_series("segv"))
    (row,) = batch.run([segv], load={"model": tiny_model}, dask=cluster.scheduler_address, scan=faulty)
    assert row.error == "the Dask workers that ran this scan died (KilledWorker); see the workers' logs"
    cluster.wait_for_workers(2, timeout=60)  # the nannies restarted the workers the segfaults killed
    goods = [str(dicom_series(f"good{i}")) for i in range(3)]
    after = list(batch.run(goods, load={"model": tiny_model}, dask=cluster.scheduler_address, scan=faulty))
    assert sorted(r.path for r in after) == sorted(goods) and all(r.found for r in after)


def test_bad_model_raises_before_anything_is_written(
    cluster: Any, dicom_series: Factory, tmp_path: Path
) -> None:
    bare = save_tiny_model(tmp_path / "bare.xml", metadata=None)
    out = tmp_path / "r.jsonl"
    with pytest.raises(ModelError, match="no l3edge metadata"):
        batch.run([str(dicom_series("a"))], load={"model": bare}, dask=cluster.scheduler_address, out=out)
    assert not out.exists()


def test_a_client_object(cluster: Any, tiny_model: Path, dicom_series: Factory) -> None:
    from distributed import Client

    scans = [str(dicom_series(n)) for n in ("a", "b")]
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        got = list(batch.run(scans, load={"model": tiny_model}, dask=client))
        assert client.status == "running"  # a client passed in is left open
    assert sorted(r.path for r in got) == sorted(scans) and all(r.found for r in got)


def test_unreachable_scheduler_is_a_usage_error() -> None:
    from l3edge.cluster import DaskBackend
    from l3edge.errors import UsageError

    with pytest.raises(UsageError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        DaskBackend("tcp://127.0.0.1:1", {}, {}, None, connect_timeout_s=1).start()
