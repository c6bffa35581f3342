"""The HTTP API (FastAPI on uvicorn): ``POST /v1/predict``, results by id, ``/health``, ``/v1/model``,
``/docs``.

A request's life: the guard (an ASGI middleware) checks the bearer token and the declared size from the
headers alone, before any of the body is read (401, 413); the predictor admits it or answers 429 with
``Retry-After``; the multipart body is streamed (python-multipart, through Starlette) while the guard counts
its bytes (413 past the limit); the files are written into a fresh folder under ``uploads/``, checked
(``l3edge.serve.upload``) and predicted on a worker; the folder is deleted when the worker is done, whatever
happened. QA pictures and exported slices are kept under ``results/<id>/`` (the last ``keep_results``) and
served by id. Errors answer ``{"detail": "<the CLI's one-line message>"}``: 400 a bad request or option,
413 too large, 422 a study l3edge cannot use, 429 queue full, 500 a worker that failed, 503 no model.
Logs name request ids, counts, sizes and times, never file names or patient data.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from l3edge import __version__
from l3edge.cli.common import error_line
from l3edge.errors import InputError, L3EdgeError, ModelError, UsageError
from l3edge.result import L3Result
from l3edge.serve.predictor import Predictor, WorkerCrash
from l3edge.serve.upload import Part, safe_name, save_study

log = logging.getLogger(__name__)

MAX_FILES = 20000
"""DICOM files in one multipart upload (a thin-slice whole-body CT has a few thousand)."""
RESULT_FILES = {"qa.png": "image/png", "slice.dcm": "application/dicom", "slice.png": "image/png"}
RESULT_FILES["slice.nii.gz"] = "application/gzip"
TAIL = "l3edge.body_tail"
OPEN = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
"""Paths answered without the token: the probe and the documentation (no data in either)."""
_RID = re.compile(r"^[0-9a-f]{32}(-[0-9]{1,4})?$")
_MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one zip of a DICOM study, one NIfTI file, or several DICOM files",
                        }
                    },
                }
            }
        },
    }
}


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP API's limits and where it keeps uploads and results."""

    state_dir: Path
    """``uploads/`` (one folder per request, deleted when answered) and ``results/`` live here."""
    token: str | None = None
    """Every request but ``OPEN`` needs ``Authorization: Bearer <token>`` (None: no check)."""
    max_upload: int = 4 << 30
    """Bytes of one request body (413 past it)."""
    max_unpacked: int = 16 << 30
    """Bytes a zip archive may unpack to."""
    keep_results: int = 1000
    """Result folders (QA pictures, exported slices) kept; the oldest go first."""


class TooLarge(Exception):
    """The request body grew past the limit while it was being read."""


def _answer(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _too_large(limit: int) -> str:
    return error_line("upload", f"larger than the limit of {limit / 2**20:.0f} MiB (--max-upload-mb)")


class Guard:
    """ASGI middleware: token and size checks before the body is read; counts the body's bytes as it comes."""

    def __init__(self, app: ASGIApp, token: str | None, max_upload: int) -> None:
        self.app, self.max_upload = app, max_upload
        self.token = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in OPEN:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.token):
                line = error_line("request", "missing or wrong token: send 'Authorization: Bearer <token>'")
                await _answer(401, line, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_upload:
            await _answer(413, _too_large(self.max_upload))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            body = message.get("body", b"")
            seen += len(body)
            scope[TAIL] = (scope.get(TAIL, b"") + body)[-512:]  # the end of the body, to see it is complete
            if seen > self.max_upload:
                raise TooLarge()
            return message

        await self.app(scope, counted, send)


def _status(exc: L3EdgeError) -> int:
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, ModelError):
        return 503
    return 400


def _scrub(value: Any, scan: str, name: str) -> Any:
    """Server paths out of a result: the scan's path on disk becomes the client's name for it, and the rest
    of the upload folder's path goes."""
    if isinstance(value, str):
        return value.replace(scan, name).replace(str(Path(scan).parent) + "/", "")
    if isinstance(value, list):
        return [_scrub(v, scan, name) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, scan, name) for k, v in value.items()}
    return value


def _options(query: dict[str, str], work: Path) -> dict[str, Any]:
    """``predict``'s options from the query string and form fields (level, series, export, qa)."""
    unknown = set(query) - {"level", "series", "export", "qa"}
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(sorted(unknown))}; known: level, series, export, qa")
    flags = {}
    for key in ("export", "qa"):
        value = query.get(key, "false").lower()
        if value not in ("1", "0", "true", "false", "yes", "no"):
            raise UsageError(f"{key} must be true or false, not {query[key]!r}")
        flags[key] = value in ("1", "true", "yes")
    options: dict[str, Any] = {}
    if query.get("level"):
        options["level"] = query["level"].upper()
    if query.get("series"):
        options["series_uid"] = query["series"]
    if flags["qa"]:
        options["qa_dir"] = str(work / "qa")
    if flags["export"]:
        options["export_dir"] = str(work / "export")
    return options


def _complete(request: Request) -> bool:
    """The multipart body ends with its closing boundary (python-multipart drops a cut-off last part)."""
    boundary = request.headers.get("content-type", "").partition("boundary=")[2].split(";")[0].strip('"')
    tail: bytes = request.scope.get(TAIL, b"")
    return not boundary or tail.rstrip(b"\r\n").endswith(b"--" + boundary.encode("latin-1") + b"--")


class Results:
    """The QA pictures and exported slices of answered requests, by id, the last ``keep`` of them."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root, keep
        root.mkdir(parents=True, exist_ok=True)

    def publish(self, result: L3Result, rid: str, name: str, scan: str) -> dict[str, Any]:
        """The result as the client sees it: its files moved under ``rid``, server paths replaced by URLs."""
        d = _scrub(result.to_dict(), scan, name)
        d["path"], d["id"] = name, rid
        folder = self.root / rid
        moves: list[tuple[Path, str, str | None]] = []
        if result.qa_path:
            moves.append((Path(result.qa_path), "qa.png", "qa_path"))
        if result.export_path:
            src = Path(result.export_path)
            nifti = src.name.lower().endswith(".nii.gz")
            stem = src.name[: -len(".nii.gz")] if nifti else src.stem
            moves.append((src, "slice.nii.gz" if nifti else "slice.dcm", "export_path"))
            moves.append((src.with_name(stem + ".png"), "slice.png", None))
        for src, target, key in moves:
            if src.is_file():
                folder.mkdir(exist_ok=True)
                shutil.move(src, folder / target)
                if key:
                    d[key] = f"/v1/results/{rid}/{target}"
        return d

    def prune(self) -> None:
        kept = (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))  # not .work-
        folders = sorted(kept, key=lambda p: p.stat().st_mtime)
        for p in folders[: max(0, len(folders) - self.keep)]:
            shutil.rmtree(p, ignore_errors=True)

    def file(self, rid: str, name: str) -> Path | None:
        if not _RID.match(rid) or name not in RESULT_FILES:
            return None
        p = self.root / rid / name
        return p if p.is_file() else None


async def _predict(
    request: Request, predictor: Predictor, config: HttpConfig, results: Results, uploads: Path
) -> Any:
    """One admitted predict request: read the upload into ``uploads``, predict, publish; always clean up."""
    rid, t0 = uuid.uuid4().hex, time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"{rid}-", dir=uploads))
    work = results.root / f".work-{rid}"
    handed, name, status, scan = False, "upload", 200, f"{tmp}/study"
    try:
        try:
            form = await request.form(max_files=MAX_FILES, max_fields=100)
        except TooLarge:
            status = 413
            return _answer(status, _too_large(config.max_upload))
        except ClientDisconnect:
            status = 499
            log.warning("request %s: the client went away mid-upload; its files are deleted", rid)
            return _answer(
                400, error_line("upload", "the client disconnected before the upload was complete")
            )
        except HTTPException as exc:
            status = 400
            detail = f"not a complete multipart form ({exc.detail}); was the upload cut short?"
            return _answer(status, error_line("upload", detail))
        try:
            if not _complete(request):
                status = 400
                detail = "the multipart body ends before its closing boundary; was the upload cut short?"
                return _answer(status, error_line("upload", detail))
            items = form.multi_items()
            parts = [Part(v.filename or "", v.file) for _, v in items if isinstance(v, UploadFile)]
            fields = {k: v for k, v in items if isinstance(v, str)}
            options = _options({**dict(request.query_params), **fields}, work)
            name = safe_name(parts[0].filename) if len(parts) == 1 else "dicom" if parts else "upload"
            path = await run_in_threadpool(save_study, parts, tmp, config.max_unpacked)
            scan = str(path)
            size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        finally:
            await form.close()
        log.info("request %s: %d file(s), %d bytes", rid, len(parts), size)
        future = predictor.submit(str(path), options, done=lambda: shutil.rmtree(tmp, ignore_errors=True))
        handed = True
        answer = await asyncio.wrap_future(future)
        ids = [rid] if len(answer) == 1 else [f"{rid}-{i}" for i in range(len(answer))]
        body = [results.publish(r, i, name, scan) for r, i in zip(answer, ids, strict=True)]
        return JSONResponse(body if options.get("series_uid") == "all" else body[0])
    except L3EdgeError as exc:
        status = _status(exc)
        return _answer(status, error_line(name, _scrub(str(exc), scan, name)))
    except WorkerCrash as exc:
        status = 500
        return _answer(status, error_line(name, exc))
    finally:
        if not handed:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        predictor.release()
        results.prune()
        log.info("request %s: %d in %.0f ms", rid, status, (time.perf_counter() - t0) * 1000)


def create_app(predictor: Predictor, config: HttpConfig) -> ASGIApp:
    """The ASGI application (the model is already loaded in ``predictor``)."""
    uploads = config.state_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    results = Results(config.state_dir / "results", config.keep_results)
    app = FastAPI(
        title="l3edge",
        version=__version__,
        description="Find the L3 vertebra slice in CT studies. Errors answer {'detail': '<one line>'}.",
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and load: requests admitted (working, queued or uploading) and the pool's size."""
        return {
            "status": "ok",
            "version": __version__,
            "admitted": predictor.admitted,
            "workers": predictor.workers,
        }

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The model's metadata, as ``l3edge info --json`` prints it, and the pool's size."""
        return predictor.model_info()

    @app.get("/v1/results/{rid}/{name}")
    async def result_file(rid: str, name: str) -> Any:
        """A result's QA picture (``qa.png``) or exported slice (``slice.dcm`` or ``slice.nii.gz``, and
        ``slice.png``), by the ``id`` of its result."""
        p = results.file(rid, name)
        if p is None:
            return _answer(
                404, error_line(rid, f"no {name} for this result id (kept: the last {results.keep})")
            )
        return FileResponse(p, media_type=RESULT_FILES[name])

    @app.post("/v1/predict", openapi_extra=_MULTIPART)
    async def predict(
        request: Request,
        level: str | None = None,
        series: str | None = None,
        export: bool = False,
        qa: bool = False,
    ) -> Any:
        """Locate L3 (or ``level``) in one study: a zip, a NIfTI file, or several DICOM files, as multipart
        ``file`` parts. Options as ``predict``'s: ``level``, ``series`` (a SeriesInstanceUID, or ``all`` for a
        list with one result per candidate series), ``export`` and ``qa`` (then fetch
        ``/v1/results/{id}/slice.dcm`` and ``qa.png``); in the query string or as form fields."""
        if not predictor.admit():
            wait = predictor.retry_after()
            line = error_line(
                "request", f"the queue is full ({predictor.admitted} requests); retry in {wait} s"
            )
            return _answer(429, line, {"Retry-After": str(wait)})
        return await _predict(request, predictor, config, results, uploads)

    return Guard(app, config.token, config.max_upload)


def serve_http(predictor: Predictor, config: HttpConfig, host: str, port: int, verbose: bool = False) -> None:
    """Run the API on ``host:port`` until interrupted (uvicorn, one event loop; the work runs on the pool)."""
    import uvicorn

    app = create_app(predictor, config)
    uvicorn.run(app, host=host, port=port, log_level="info" if verbose else "warning", access_log=verbose)
