"""Real parts for the service's tests and bench, on loopback ports: ``l3edge serve`` as a subprocess, and a
throwaway Orthanc (Debian's ``/usr/sbin/Orthanc``) with its storage in a given folder, a modality entry
``l3edge`` for the node, and stores accepted only from it."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ORTHANC = Path("/usr/sbin/Orthanc")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Orthanc:
    base: str
    """The REST API, e.g. ``http://127.0.0.1:8042``."""
    dicom_port: int
    node_port: int
    """The port the modality entry ``l3edge`` (AE ``L3EDGE`` on 127.0.0.1) points to."""

    @property
    def send_to(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom_port}"


def stop(proc: subprocess.Popen, wait_s: float) -> None:
    """SIGTERM, then SIGKILL after ``wait_s`` seconds."""
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def config(folder: Path, http_port: int, dicom_port: int, node_port: int) -> dict:
    return {
        "Name": "l3edge-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,  # the REST API answers loopback only
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomModalities": {"l3edge": ["L3EDGE", "127.0.0.1", node_port]},
        "DicomAlwaysAllowStore": False,  # only the l3edge modality, from 127.0.0.1, may store
        "DicomCheckModalityHost": True,
        "ConcurrentJobs": 4,
    }


@contextlib.contextmanager
def running(folder: Path, timeout: float = 30) -> Iterator[Orthanc]:
    """Start Orthanc with its storage and log in ``folder``; stop it when the block ends."""
    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port, node_port = free_port(), free_port(), free_port()
    (folder / "orthanc.json").write_text(json.dumps(config(folder, http_port, dicom_port, node_port)))
    log = (folder / "orthanc.log").open("w")
    proc = subprocess.Popen(
        [str(ORTHANC), str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/system", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield Orthanc(base, dicom_port, node_port)
    finally:
        stop(proc, 15)
        log.close()


@contextlib.contextmanager
def serve(
    args: list[str], log: Path, wait_for: str | None = None, timeout: float = 60
) -> Iterator[subprocess.Popen]:
    """Run ``l3edge serve ARGS`` until the block ends; waits for ``wait_for`` (a URL answering 200, any
    token) or for the node's start-up line."""
    import httpx

    f = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "l3edge.cli", "serve", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"l3edge serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"l3edge serve did not start in {timeout} s: {log.read_text()[-2000:]}")
            try:
                if wait_for is not None and httpx.get(wait_for, timeout=2).status_code == 200:
                    break
                if wait_for is None and "DICOM node" in log.read_text():
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc, 10)
        f.close()


def zip_folder(
    folder: Path, out: Path, extra: dict[str, bytes] | None = None, method: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(out, "w", method) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out
