"""One model, loaded once, shared by a bounded pool of worker threads (the HTTP API and the DICOM node).

``L3Locator`` is thread-safe: the workers decode their scans in parallel and take turns on the model. The
pool takes at most ``workers`` scans at a time and holds at most ``queue`` more; past that,
:meth:`Predictor.admit` says no (the HTTP API answers 429 with ``Retry-After``). A worker whose scan raises
an unexpected exception reports :class:`WorkerCrash` for that scan and takes the next one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from l3edge.errors import L3EdgeError

if TYPE_CHECKING:
    from l3edge.batch import ScanFunction
    from l3edge.locator import L3Locator
    from l3edge.result import L3Result

log = logging.getLogger(__name__)


class WorkerCrash(Exception):
    """A scan raised an unexpected exception in its worker (not a typed l3edge error); the pool goes on."""


class Predictor:
    """The shared model and its worker pool."""

    def __init__(
        self,
        load: Mapping[str, Any],
        workers: int = 2,
        queue: int = 8,
        scan: ScanFunction | None = None,
    ) -> None:
        from l3edge.locator import L3Locator

        self.locator: L3Locator = L3Locator.load(**dict(load))
        """The one model (raises ModelError or UsageError here, before anything listens)."""
        self.workers = workers
        self.queue = queue
        self._scan = scan
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="l3edge-worker")
        self._lock = threading.Lock()
        self._admitted = 0
        self._seconds: list[float] = []  # the last scans' durations, for Retry-After

    @property
    def admitted(self) -> int:
        """Requests admitted and not yet answered (working, queued, or still uploading)."""
        return self._admitted

    def admit(self) -> bool:
        """Take a place for one request (``release`` it when answered); False when the queue is full."""
        with self._lock:
            if self._admitted >= self.workers + self.queue:
                return False
            self._admitted += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._admitted = max(0, self._admitted - 1)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the recent mean scan time times the queue's depth."""
        with self._lock:
            mean = sum(self._seconds) / len(self._seconds) if self._seconds else 1.0
            ahead = max(1, self._admitted - self.workers + 1)
        return max(1, math.ceil(mean * ahead / self.workers))

    def submit(
        self, path: str, options: Mapping[str, Any], done: Callable[[], None] | None = None
    ) -> Future[list[L3Result]]:
        """Run one scan on a worker; the future gives its results, or raises an ``L3EdgeError`` (user error)
        or :class:`WorkerCrash`. ``done`` runs on the worker afterwards, whatever happened."""
        return self._pool.submit(self._run, path, dict(options), done)

    def _run(self, path: str, options: dict[str, Any], done: Callable[[], None] | None) -> list[L3Result]:
        from l3edge.batch import predict

        t0 = time.perf_counter()
        try:
            answer = (self._scan or predict)(self.locator, path, options)
            if isinstance(answer, list | tuple):
                return list(answer)
            return [answer]  # type: ignore[list-item]
        except L3EdgeError:
            raise
        except Exception as exc:
            log.error(
                "%s: worker failed: %s", path, type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG)
            )
            raise WorkerCrash(
                f"the worker failed on this scan ({type(exc).__name__}); the server goes on, please report it"
            ) from exc
        finally:
            with self._lock:
                self._seconds = [*self._seconds[-19:], time.perf_counter() - t0]
            if done is not None:
                done()

    def model_info(self) -> dict[str, Any]:
        """What ``l3edge info --json`` prints, and the pool's size."""
        import json

        meta = self.locator.metadata
        d: dict[str, Any] = json.loads(meta.to_json())
        d["path"], d["found_via"] = str(self.locator.location.path), self.locator.location.source
        d["service"] = {"workers": self.workers, "queue": self.queue, "threads": self.locator.threads}
        return d

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
