"""Real servers for the service tests: ``l3edge serve`` as a subprocess on loopback ports, and fault functions
(``--scan-function tests.serve_helpers:faulty``) that the worker imports by name."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def faulty(locator: Any, path: str, options: dict[str, Any]) -> Any:
    """A zip with a member named ``boom`` raises an unexpected exception, ``hang`` sleeps 20 s; else
    predicts as the server would."""
    names: set[str] = set()
    if path.endswith(".zip"):
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as z:
            names = set(z.namelist())
        if "boom" in names:
            raise RuntimeError("synthetic failure")
        if "hang" in names:
            time.sleep(20)
    from l3edge.batch import predict

    return predict(locator, path, options)


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
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
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
