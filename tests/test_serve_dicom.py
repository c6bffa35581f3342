"""The DICOM node against real parts: a real Orthanc (``/usr/sbin/Orthanc``) sends a phantom study to
``l3edge serve --dicom`` and receives the Secondary Capture and SR back; faults with a pynetdicom SCU."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SMALL_PHANTOM, write_band_series
from tests.serve_helpers import free_port, serve, zip_folder
from tools.service import ORTHANC, Orthanc, running

httpx = pytest.importorskip("httpx", reason="the serve tests need httpx (the test extra)")
pynetdicom = pytest.importorskip("pynetdicom", reason="l3edge serve --dicom needs the serve extra")
pytest.importorskip("highdicom", reason="l3edge serve --dicom needs the serve extra")


def wait_for(check, timeout: float = 60, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def rows(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in out.read_text().splitlines()] if out.is_file() else []


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if not ORTHANC.exists():
        pytest.skip("Orthanc is not installed (Debian package orthanc; .ci/run installs it)")
    with running(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def test_orthanc_sends_a_study_and_gets_the_sc_and_sr_back(orthanc: Orthanc, tmp_path: Path) -> None:
    import pydicom

    base = orthanc.base
    from l3edge.phantom import write_phantom

    study = (
        tmp_path / "phantom"
    )  # as `l3edge phantom DIR --seed 3 --region abdomen`, in the tests' small size
    write_phantom(study, 3, "dicom", "abdomen", **SMALL_PHANTOM)
    up = httpx.post(
        f"{base}/instances", content=zip_folder(study, tmp_path / "p.zip", method=0).read_bytes(), timeout=120
    )
    assert up.status_code == 200, up.text
    study_id = up.json()[0]["ParentStudy"]
    out = tmp_path / "results.jsonl"
    args = ["--dicom", f"127.0.0.1:{orthanc.node_port}", "--idle", "1", "--out", str(out)]
    args += ["--spool", str(tmp_path / "spool"), "--send-to", orthanc.send_to]
    with serve(args, tmp_path / "node.log"):
        sent = httpx.post(f"{base}/modalities/l3edge/store", content=study_id, timeout=120)
        assert sent.status_code == 200 and sent.json()["FailedInstancesCount"] == 0, sent.text
        row = wait_for(lambda: rows(out), 60, "the result row")[0]
        series = wait_for(
            lambda: (
                (s := httpx.get(f"{base}/studies/{study_id}/series", timeout=10).json()) and len(s) == 3 and s
            ),
            60,
            "the SC and SR in Orthanc",
        )
    truth = json.loads((study / "truth.json").read_text())
    assert row["found"] and row["error"] is None and row["n_slices"] == len(list(study.glob("*.dcm")))
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in study.glob("*.dcm")}
    assert row["sop_instance_uid"] in uids
    assert abs(row["z_mm"] - truth["l3_z_mm"]) < 15  # the phantom's own L3
    by_modality = {s["MainDicomTags"]["Modality"]: s for s in series}
    assert set(by_modality) == {"CT", "OT", "SR"}
    sr_id = by_modality["SR"]["Instances"][0]
    sr = pydicom.dcmread(__import__("io").BytesIO(httpx.get(f"{base}/instances/{sr_id}/file").content))
    refs = [
        ref.ReferencedSOPInstanceUID
        for item in sr.ContentSequence
        for ref in item.get("ReferencedSOPSequence", [])
    ]
    assert refs == [row["sop_instance_uid"]]
    values = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert float(values["Patient z of the level"].MeasuredValueSequence[0].NumericValue) == pytest.approx(
        row["z_mm"], abs=1e-3
    )
    assert values["Review needed"].TextValue == ("yes" if row["review"] else "no")
    assert (
        sr.StudyInstanceUID
        == pydicom.dcmread(next(study.iterdir()), stop_before_pixels=True).StudyInstanceUID
    )
    sc_id = by_modality["OT"]["Instances"][0]
    sc_tags = httpx.get(f"{base}/instances/{sc_id}/simplified-tags").json()
    assert sc_tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.7"
    assert not list((tmp_path / "spool").glob("*/*"))  # the spool is empty once the row is written


def _scu_send(port: int, files: list[Path], abort: bool = False) -> None:
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="L3EDGE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    for f in files:
        assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0
    assoc.abort() if abort else assoc.release()


def test_aborted_association_and_restart_with_a_full_spool(tmp_path: Path, tiny_model: Path) -> None:
    files = sorted(write_band_series(tmp_path / "s1").iterdir())
    full = sorted(write_band_series(tmp_path / "s2").iterdir())
    out, spool, port = tmp_path / "results.jsonl", tmp_path / "spool", free_port()
    base = [
        "--dicom",
        f"127.0.0.1:{port}",
        "--model",
        str(tiny_model),
        "--out",
        str(out),
        "--spool",
        str(spool),
    ]
    with serve([*base, "--idle", "1"], tmp_path / "node1.log"):
        _scu_send(port, files[:10], abort=True)  # 10 of 40 instances, then the association is aborted
        row = wait_for(lambda: rows(out), 30, "the partial series' row")[0]
    assert (
        "the association was aborted mid-series: predicted from the 10 instances received" in row["warnings"]
    )
    assert row["error"] is not None or row["n_slices"] == 10
    # A whole series received, then the node stopped before its idle time: the spool keeps it ...
    with serve([*base, "--idle", "600"], tmp_path / "node2.log"):
        _scu_send(port, full)
        assert len(list(spool.glob("*/*/*.dcm"))) == 40
    assert len(rows(out)) == 1
    # ... and the restarted node finishes it at once, without waiting for new instances.
    with serve([*base, "--idle", "600"], tmp_path / "node3.log"):
        wait_for(lambda: len(rows(out)) == 2, 30, "the spooled series' row")
    done = rows(out)[1]
    assert done["error"] is None and done["n_slices"] == 40 and done["found"]
    assert not list(spool.glob("*/*/*.dcm"))
