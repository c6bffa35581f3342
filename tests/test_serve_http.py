"""The HTTP API against the real thing: ``l3edge serve --http`` in its own process (uvicorn) and httpx."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_band_series
from tests.serve_helpers import ROOT, free_port, serve, zip_folder

httpx = pytest.importorskip("httpx", reason="the serve tests need httpx (the test extra)")
pytest.importorskip("fastapi", reason="l3edge serve needs the serve extra")
pytest.importorskip("uvicorn", reason="l3edge serve needs the serve extra")

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VOLATILE = {"path", "timings_ms", "qa_path", "export_path", "id"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_band_series(tmp_path_factory.mktemp("study") / "scan")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    args = ["--http", str(port), "--model", str(tiny_model), "--token", TOKEN, "--max-upload-mb", "8"]
    args += ["--state", str(tmp / "state"), "--scan-function", "tests.serve_helpers:faulty", "--workers", "2"]
    with serve(args, tmp / "log.txt", f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}", tmp / "state"


def post(base: str, files: list, params: dict | None = None, **kw: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/predict", files=files, params=params, headers=AUTH, timeout=60, **kw)


def cli_result(path: Path, model: Path, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "l3edge.cli", "predict", str(path), "--json", "-q", "--model", str(model)]
    out = subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]


def same(a: dict, b: dict) -> dict:
    return {k: v for k, v in a.items() if k not in VOLATILE} == {
        k: v for k, v in b.items() if k not in VOLATILE
    }


def test_health_and_model(server: tuple[str, Path], tiny_model: Path) -> None:
    base, _ = server
    assert httpx.get(f"{base}/health").json()["status"] == "ok"  # open to probes without the token
    model = httpx.get(f"{base}/v1/model", headers=AUTH).json()
    info = subprocess.run(
        [sys.executable, "-m", "l3edge.cli", "info", "--json", "--model", str(tiny_model)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert {k: v for k, v in model.items() if k != "service"} == json.loads(info.stdout)
    assert model["service"]["workers"] == 2
    assert httpx.get(f"{base}/docs").status_code == 200  # the docs open in a browser, without the token
    assert "/v1/predict" in httpx.get(f"{base}/openapi.json").json()["paths"]
    assert httpx.get(f"{base}/v1/model").status_code == 401


def test_zip_files_and_options_answer_as_the_cli(
    server: tuple[str, Path], study: Path, tiny_model: Path, tmp_path: Path
) -> None:
    base, state = server
    archive = zip_folder(study, tmp_path / "study.zip")
    cli = cli_result(archive, tiny_model)[0]
    r = post(
        base,
        [("file", ("study.zip", archive.read_bytes(), "application/zip"))],
        {"qa": "true", "export": "true"},
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["found"] and same(got, cli) and got["path"] == "study.zip"
    qa = httpx.get(f"{base}{got['qa_path']}", headers=AUTH)
    assert qa.status_code == 200 and qa.content.startswith(b"\x89PNG")
    dcm = httpx.get(f"{base}{got['export_path']}", headers=AUTH)
    import pydicom

    assert pydicom.dcmread(io.BytesIO(dcm.content)).SOPInstanceUID == got["sop_instance_uid"]
    assert httpx.get(f"{base}/v1/results/{got['id']}/qa.png").status_code == 401
    assert httpx.get(f"{base}/v1/results/{'0' * 32}/qa.png", headers=AUTH).status_code == 404
    # The same study as separate DICOM parts, with the options as form fields.
    parts = [("file", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(study.iterdir())]
    r2 = post(base, parts, data={"level": "l3"})
    assert r2.status_code == 200 and same(r2.json(), cli) and r2.json()["path"] == "dicom"
    every = post(base, [("file", ("study.zip", archive.read_bytes()))], {"series": "all"}).json()
    cli_all = cli_result(archive, tiny_model, "--series", "all")
    assert isinstance(every, list) and len(every) == len(cli_all) == 1 and same(every[0], cli_all[0])
    assert list((state / "uploads").iterdir()) == []  # every upload folder is gone once answered


def test_nifti(server: tuple[str, Path], tmp_path: Path, tiny_model: Path) -> None:
    pytest.importorskip("nibabel")
    from tests.dicom_factory import make_volume, write_nifti

    path = write_nifti(tmp_path / "v.nii.gz", make_volume(nz=20))
    r = post(server[0], [("file", ("v.nii.gz", path.read_bytes()))])
    assert r.status_code == 200, r.text
    assert same(r.json(), cli_result(path, tiny_model)[0])


def bad_zips(tmp: Path, study: Path) -> dict[str, tuple[bytes, int, str]]:
    def z(entries: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as f:
            for n, d in entries.items():
                f.writestr(n, d)
        return buf.getvalue()

    one = next(study.iterdir()).read_bytes()
    return {
        "not_zip": (b"PK\x03\x04" + bytes(range(256)) * 3, 422, "not a readable zip archive"),
        "empty": (z({}), 422, "no DICOM"),
        "outside": (z({"../../etc/evil.dcm": one}), 422, "lead outside"),
        "bomb": (z({"a.dcm": bytes(60 << 20)}), 422, "zip bomb"),
        "no_ct": (z({"readme.txt": b"hello"}), 422, "no DICOM"),
        "random": (b"\x00garbage" * 100, 422, "no DICOM"),
    }


def test_bad_inputs_answer_4xx_with_one_line(server: tuple[str, Path], study: Path, tmp_path: Path) -> None:
    base, state = server
    for case, (data, status, text) in bad_zips(tmp_path, study).items():
        r = post(base, [("file", (f"{case}.zip", data))])
        assert r.status_code == status, (case, r.text)
        detail = r.json()["detail"]
        assert detail.startswith("l3edge: error: ") and text in detail and "\n" not in detail, (case, detail)
        assert str(state) not in detail and "/tmp" not in detail, (case, detail)
    r = post(base, [("file", ("s.zip", zip_folder(study, tmp_path / "s.zip").read_bytes()))], {"level": "Q9"})
    assert r.status_code == 400 and "not 'Q9'" in r.json()["detail"]
    assert post(base, [], data={"x": "1"}).status_code == 400
    # A truncated multipart body (the closing boundary never comes).
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\nPK\x03\x04abc'
    r = httpx.post(
        f"{base}/v1/predict",
        content=body,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert r.status_code == 400 and "cut short" in r.json()["detail"]
    assert list((state / "uploads").iterdir()) == []


def raw(base: str, head: bytes, body: bytes = b"", wait: float = 10) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(head + body)
        return s.recv(4096)


def test_token_and_size_are_checked_before_the_body(server: tuple[str, Path]) -> None:
    base, state = server
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    # 1 GB announced, nothing sent: the answer comes at once, so nothing of the body was awaited.
    assert raw(base, head + b"Content-Length: 1000000000\r\n\r\n").startswith(b"HTTP/1.1 401")
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    assert raw(base, head + auth + b"Content-Length: 1000000000\r\n\r\n").startswith(b"HTTP/1.1 413")
    assert httpx.post(f"{base}/v1/predict", headers={"Authorization": "Bearer wrong"}).status_code == 401

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
        for _ in range(10):
            yield bytes(1 << 20)

    r = httpx.post(
        f"{base}/v1/predict",
        content=chunks(),
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert r.status_code == 413 and "limit of 8 MiB" in r.json()["detail"]
    assert list((state / "uploads").iterdir()) == []


def test_client_gone_mid_upload_leaves_nothing(server: tuple[str, Path]) -> None:
    base, state = server
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 5000000\r\n\r\n".encode()
        + b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
    )
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + bytes(2 << 20))
        time.sleep(0.5)
        assert len(list((state / "uploads").iterdir())) == 1  # the upload had started
    deadline = time.monotonic() + 10
    while list((state / "uploads").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list((state / "uploads").iterdir()) == []
    assert httpx.get(f"{base}/health").json()["admitted"] == 0


def test_worker_failure_answers_500_and_the_server_goes_on(
    server: tuple[str, Path], study: Path, tmp_path: Path
) -> None:
    base, _ = server
    boom = zip_folder(study, tmp_path / "boom.zip", {"boom": b""})
    r = post(base, [("file", ("boom.zip", boom.read_bytes()))])
    assert r.status_code == 500
    assert "the worker failed on this scan (RuntimeError); the server goes on" in r.json()["detail"]
    ok = post(base, [("file", ("s.zip", zip_folder(study, tmp_path / "s.zip").read_bytes()))])
    assert ok.status_code == 200 and ok.json()["found"]


def test_full_queue_answers_429_with_retry_after(tiny_model: Path, study: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--http", f"127.0.0.1:{port}", "--model", str(tiny_model), "--workers", "1", "--queue", "0"]
    args += ["--state", str(tmp_path / "state"), "--scan-function", "tests.serve_helpers:faulty"]
    hang = zip_folder(study, tmp_path / "hang.zip", {"hang": b""}).read_bytes()
    with serve(args, tmp_path / "log.txt", f"{base}/health"):

        def hold() -> None:  # the server is stopped while this request still hangs
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{base}/v1/predict", files=[("file", ("h.zip", hang))], timeout=60)

        first = threading.Thread(target=hold)
        first.daemon = True
        first.start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{base}/health").json()["admitted"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = httpx.post(f"{base}/v1/predict", files=[("file", ("h.zip", hang))], timeout=30)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "queue is full" in r.json()["detail"]


def test_serve_without_the_extra_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "sys.argv = ['l3edge', 'serve', '--http', '9']\n"
        "from l3edge.cli import main; main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        'l3edge: error: serve: needs the serve extra (fastapi is not installed): pip install "l3edge[serve]"'
    ]
