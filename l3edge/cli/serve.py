"""``l3edge serve``: the HTTP API and/or the DICOM node, sharing one loaded model (``l3edge.serve``)."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from l3edge.cli.common import EXIT_USAGE, ModelOpt, VerboseOpt, error, fail, setup_logging
from l3edge.errors import L3EdgeError, UsageError


def _address(text: str, what: str) -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port); the host defaults to 127.0.0.1 (loopback only)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{what} must be [HOST:]PORT with a port 1-65535, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _scan_function(spec: str | None) -> Any:
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--scan-function {spec!r}: cannot import it ({type(exc).__name__})") from None


def _start_node(
    predictor: Any,
    at: tuple[str, int],
    ae_title: str,
    spool: Path,
    out: Path,
    idle: float,
    send_to: str | None,
) -> Any:
    """Start the DICOM node (a storage SCP writing into ``spool``) on ``at``; returns it running."""
    from l3edge.serve.dicom_node import DicomNode, NodeConfig

    config = NodeConfig(ae_title=ae_title, spool=spool, out=out, idle_s=idle, send_to=send_to)
    node = DicomNode(predictor, config)
    node.start(*at)
    typer.echo(f"l3edge: DICOM node {ae_title} on {at[0]}:{at[1]}", err=True)
    return node


def serve(
    http: Annotated[
        str | None, typer.Option(help="Serve the HTTP API on [HOST:]PORT (host default 127.0.0.1).")
    ] = None,
    dicom: Annotated[
        str | None, typer.Option(help="Run a DICOM storage node (C-STORE CT, C-ECHO) on [HOST:]PORT.")
    ] = None,
    ae_title: Annotated[str, typer.Option(help="The DICOM node's AE title.")] = "L3EDGE",
    idle: Annotated[
        float,
        typer.Option(min=0.1, help="A DICOM series is complete after this many seconds without an instance."),
    ] = 10.0,
    out: Annotated[
        Path, typer.Option(help="The DICOM node appends each series' result to this .jsonl or .csv file.")
    ] = Path("results.jsonl"),
    send_to: Annotated[
        str | None,
        typer.Option(help="AE@HOST:PORT: send each DICOM result back there (QA Secondary Capture and SR)."),
    ] = None,
    spool: Annotated[
        Path | None,
        typer.Option(
            help="Folder for received instances (default: l3edge-spool beside --out); kept until predicted."
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(help="Folder for HTTP uploads and results (default: a new temporary folder)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="L3EDGE_TOKEN", help="HTTP requests need 'Authorization: Bearer TOKEN'."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest HTTP request body, MiB.")] = 4096.0,
    workers: Annotated[int, typer.Option(min=1, help="Scans predicted at the same time (threads).")] = 2,
    queue: Annotated[int, typer.Option(min=0, help="Requests waiting beyond the workers before 429.")] = 8,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for inference and for each scan's decoding.")
    ] = None,
    keep_results: Annotated[
        int, typer.Option(min=1, help="HTTP results (QA, slices) kept for fetching.")
    ] = 1000,
    model: ModelOpt = None,
    scan_function: Annotated[
        str | None, typer.Option(hidden=True, help="MODULE:NAME per-scan function (fault-injection tests).")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve l3edge: an HTTP API (--http) and/or a DICOM node (--dicom), one model shared by both."""
    setup_logging(verbose)
    from l3edge.serve import DICOM_MODULES, HTTP_MODULES, require

    if http is None and dicom is None:
        error("serve", "give --http [HOST:]PORT, --dicom [HOST:]PORT, or both")
        raise typer.Exit(EXIT_USAGE)
    try:
        require((HTTP_MODULES if http else ()) + (DICOM_MODULES if dicom else ()))
        http_at = _address(http, "--http") if http else None
        dicom_at = _address(dicom, "--dicom") if dicom else None
        scan = _scan_function(scan_function)
        from l3edge.serve.predictor import Predictor

        predictor = Predictor({"model": model, "threads": threads}, workers=workers, queue=queue, scan=scan)
    except L3EdgeError as exc:
        raise fail("serve", exc) from None
    node, root = None, None
    try:
        if dicom_at is not None:
            node = _start_node(
                predictor, dicom_at, ae_title, spool or out.parent / "l3edge-spool", out, idle, send_to
            )
        if http_at is not None:
            from l3edge.serve.http import HttpConfig, serve_http

            root = None if state else Path(tempfile.mkdtemp(prefix="l3edge-serve-"))
            limit = int(max_upload_mb * 2**20)
            where = state if state is not None else root
            assert where is not None
            cfg = HttpConfig(state_dir=where, token=token, max_upload=limit, keep_results=keep_results)
            typer.echo(f"l3edge: HTTP API on http://{http_at[0]}:{http_at[1]} (docs at /docs)", err=True)
            serve_http(predictor, cfg, *http_at, verbose=verbose)
        elif node is not None:
            node.wait()
    except L3EdgeError as exc:
        raise fail("serve", exc) from None
    except OSError as exc:  # the port is taken, or the address is not this machine's
        error("serve", f"cannot listen: {exc.strerror or exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.stop()
        predictor.close()
        if root is not None:  # the default state folder goes with the server
            shutil.rmtree(root, ignore_errors=True)
