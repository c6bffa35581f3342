"""The Dask back end of :func:`l3edge.batch.run`: the same per-scan function as tasks on a dask.distributed
cluster (``pip install "l3edge[dask]"``). The only module that imports dask, and only when it is used.

- Every worker loads the model once (``l3edge.job.cached_locator``, one locator per worker process, shared
  by its threads: the locator is thread-safe). :meth:`DaskBackend.start` loads it on every worker present,
  so a bad model fails the run before anything is written; workers that join later load it on first use.
- Scans are tasks, at most ``2 x`` the cluster's threads in flight, so that a cohort of 100 000 scans does not
  become 100 000 futures at once; results stream back as they finish.
- Typed errors (unreadable input) are error rows at once. Any other exception is retried once by the
  scheduler, then reported as an error row; a worker that dies while holding a scan makes the scheduler
  resubmit it up to ``distributed.scheduler.allowed-failures`` times, then it is an error row too.
- ``timeout``: a scan still running after that many seconds is reported as an error row; Dask cannot stop a
  running task, so its thread finishes in the background on the worker.
- Paths are sent as absolute paths (the workers' working folders differ) and must be readable there (a
  shared file system); rows carry the path as given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from l3edge.errors import UsageError
from l3edge.job import ScanFunction, ScanOutcome, cached_locator, failure, model_info, scan_one
from l3edge.options import PredictOptions

log = logging.getLogger(__name__)

ENV_VAR = "L3EDGE_DASK"
IN_FLIGHT_PER_THREAD = 2
REFRESH_S = 10.0
"""How often the number of worker threads (hence the in-flight bound) is looked up again."""


def _worker_locator(load: dict[str, Any]) -> Any:
    """This worker's cached locator. Without ``threads`` its inference and decoding use the worker's own
    thread slots (``--nthreads``), as the local pool gives each worker its share of the cores: several worker
    processes on one machine must not each take every core."""
    if load.get("threads") is None:
        from distributed import get_worker

        with contextlib.suppress(ValueError, AttributeError):  # ValueError: not on a worker
            load = {**load, "threads": max(1, int(get_worker().state.nthreads))}
    return cached_locator(load)


def _load(load: dict[str, Any]) -> dict[str, str]:
    """Task: load (and cache) the locator on this worker; returns the model's name and version."""
    return model_info(_worker_locator(load))


def _scan(
    load: dict[str, Any],
    options: PredictOptions,
    path: str,
    timeout: float | None,
    scan: ScanFunction | None,
) -> ScanOutcome:
    """Task: one scan on this worker's cached locator. Unexpected exceptions propagate (Dask retries)."""
    locator = _worker_locator(load)
    if timeout is None:
        return scan_one(locator, path, options, reraise=True, scan=scan)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["outcome"] = scan_one(locator, path, options, reraise=True, scan=scan)
        except Exception as exc:  # noqa: BLE001 - re-raised in the task's own thread below
            box["error"] = exc

    thread = threading.Thread(target=work, name="l3edge-scan", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return failure(path, f"timed out after {timeout:g} s (--timeout)", model_info(locator))
    if "error" in box:
        raise box["error"]
    outcome: ScanOutcome = box["outcome"]
    return outcome


class DaskBackend:
    """Runs scans on the Dask cluster at ``dask`` (a scheduler address or a ``distributed.Client``)."""

    def __init__(
        self,
        dask: str | Any,
        load: Mapping[str, Any],
        options: PredictOptions,
        timeout: float | None,
        scan: ScanFunction | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.dask = dask
        self.load, self.options, self.timeout, self.scan = dict(load), options, timeout, scan
        self.connect_timeout_s = connect_timeout_s
        self.client: Any = None
        self._own_client = False
        self._limit = 2
        self._refreshed = 0.0
        self._token = uuid.uuid4().hex[:12]
        self._model: dict[str, str] = {}

    def start(self) -> dict[str, str]:
        try:
            from distributed import Client
        except ImportError as exc:
            raise UsageError('--dask needs dask.distributed: pip install "l3edge[dask]"') from exc
        if isinstance(self.dask, str):
            address = self.dask.strip()
            try:
                self.client = Client(address, timeout=self.connect_timeout_s, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(
                    f"cannot reach the Dask scheduler at {address!r} ({type(exc).__name__}); start one with "
                    "`dask scheduler` and workers with `dask worker ADDRESS`"
                ) from exc
            self._own_client = True
        else:
            self.client = self.dask
        try:
            self.client.wait_for_workers(1, timeout=self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"the Dask cluster has no workers after {self.connect_timeout_s:g} s") from exc
        workers = list(self.client.nthreads())
        # One loading task per worker present, pinned there: every worker compiles its model now, and a
        # model that cannot load raises its ModelError here (Dask re-raises the worker's exception).
        futures = [
            self.client.submit(
                _load, self.load, key=f"l3edge-load-{self._token}-{i}", workers=[w], pure=False
            )
            for i, w in enumerate(workers)
        ]
        infos = self.client.gather(futures)
        self._refresh(force=True)
        log.info("Dask cluster: %d workers, %d scans in flight at most", len(workers), self._limit)
        self._model = dict(infos[0])
        return self._model

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._refreshed > REFRESH_S:
            threads = sum(self.client.nthreads().values())
            self._limit = max(2, IN_FLIGHT_PER_THREAD * threads)
            self._refreshed = now

    def outcomes(self, paths: Sequence[str]) -> Iterator[ScanOutcome]:
        from distributed import as_completed

        todo = deque(enumerate(paths))
        given: dict[Any, tuple[str, str]] = {}
        running = as_completed(loop=self.client.loop)

        def submit() -> None:
            i, path = todo.popleft()
            absolute = os.path.abspath(path)
            future = self.client.submit(
                _scan,
                self.load,
                self.options,
                absolute,
                self.timeout,
                self.scan,
                key=f"l3edge-scan-{self._token}-{i}",
                retries=1,
                pure=False,
            )
            given[future] = (path, absolute)
            running.add(future)

        try:
            while todo and len(given) < self._limit:
                submit()
            for future in running:
                path, absolute = given.pop(future)
                yield self._outcome(future, path, absolute)
                future.release()
                self._refresh()
                while todo and len(given) < self._limit:
                    submit()
        finally:
            for future in given:
                future.cancel()
            self.close()

    def _outcome(self, future: Any, path: str, absolute: str) -> ScanOutcome:
        if future.status == "finished":
            outcome: ScanOutcome = future.result()
            if path == absolute:
                return outcome
            results = tuple(replace(r, path=path) if r.path == absolute else r for r in outcome.results)
            return replace(outcome, path=path, results=results)
        if future.status == "cancelled":
            return failure(path, "the Dask task was cancelled", self._model)
        exc = future.exception()
        log.warning("%s: failed on the Dask cluster: %s", path, type(exc).__name__)
        if type(exc).__name__ == "KilledWorker":  # its message is a paragraph with a URL
            message = "the Dask workers that ran this scan died (KilledWorker); see the workers' logs"
            return failure(path, message, self._model)
        return failure(
            path, f"failed on the Dask cluster (retried): {type(exc).__name__}: {exc}", self._model
        )

    def close(self) -> None:
        if self.client is not None and self._own_client:
            self.client.close()
        self.client = None
