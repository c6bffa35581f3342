"""A local process pool for :func:`l3edge.batch.run` (``l3edge.job.scan_one`` in each worker) that survives
its workers dying.

``concurrent.futures.ProcessPoolExecutor`` marks the whole pool broken when one worker dies, which a decoder
segfault or the OOM killer would then turn into a failed cohort. Here each worker is its own process with its
own pipe: it loads the model once, then takes one scan at a time. The parent hands the next scan to whichever
worker is free, and watches the pipes and the process sentinels together:

- a worker that dies (any signal, any exit) costs only the scan it held: an error row that says how it died,
  and a fresh worker takes its place;
- a scan past ``timeout`` seconds: its worker is killed, the scan gets an error row, a fresh worker starts;
- the parent killed outright (``kill -9``): each worker sees its pipe close and exits after its scan.

Workers are started with ``spawn`` (OpenVINO's thread pools do not survive ``fork``) and ignore SIGINT: the
parent stops them on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from l3edge.errors import L3EdgeError, ModelError
from l3edge.job import ScanFunction, ScanOutcome, cached_locator, failure, model_info, scan_one
from l3edge.options import PredictOptions

log = logging.getLogger(__name__)

_STARTUP_DEATHS = 3
"""Workers that may die while loading the model, with none ever ready, before the pool gives up."""


def _worker_main(
    conn: Connection,
    load: dict[str, Any],
    options: PredictOptions,
    scan: ScanFunction | None,
    log_level: int,
) -> None:
    """A worker process: load the model, then answer one scan path at a time until None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=log_level, format="l3edge: %(levelname)s: %(message)s")
    try:
        locator = cached_locator(load)
    except L3EdgeError as exc:
        conn.send(("fatal", exc))
        return
    conn.send(("ready", model_info(locator)))
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if path is None:
            return
        outcome = scan_one(locator, path, options, scan=scan)
        try:
            conn.send(("done", outcome))
        except (BrokenPipeError, OSError):
            return


def describe_exit(code: int | None) -> str:
    """How a worker process ended, in words."""
    if code is None:
        return "ended"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


@dataclass
class _Worker:
    process: Any  # a multiprocessing Process from the spawn context
    conn: Connection
    ready: bool = False
    path: str | None = None
    since: float = 0.0


class ProcessPool:
    """``workers`` processes, each with one locator; see the module docstring."""

    def __init__(
        self,
        workers: int,
        load: Mapping[str, Any],
        options: PredictOptions,
        timeout: float | None,
        scan: ScanFunction | None = None,
    ) -> None:
        self.n = workers
        self.load, self.options, self.timeout, self.scan = dict(load), options, timeout, scan
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._model: dict[str, str] = {}
        self._startup_deaths = 0
        self._respawn = True
        """Replace a worker that dies (False once no scan waits for a worker)."""

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self.load, self.options, self.scan, logging.getLogger("l3edge").getEffectiveLevel()),
            name="l3edge-worker",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self._workers.append(worker)
        return worker

    def start(self) -> dict[str, str]:
        """Start the workers; wait until one has loaded the model (or says why it cannot)."""
        for _ in range(self.n):
            self._spawn()
        while not any(w.ready for w in self._workers):
            self._poll(None)  # raises ModelError on a bad model
        return self._model

    def _stop(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()

    def _poll(self, deadline: float | None) -> list[ScanOutcome]:
        """Wait for messages or deaths until ``deadline`` (monotonic; None: until something happens)."""
        waits: list[Any] = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = set(wait(waits, timeout))
        done: list[ScanOutcome] = []
        for w in list(self._workers):
            message, eof = None, False
            if w.conn in ready or w.process.sentinel in ready:
                try:
                    if w.conn.poll():
                        message = w.conn.recv()
                except (EOFError, OSError):  # its end of the pipe closed: it is exiting
                    eof = True
            if message is not None:
                kind, value = message
                if kind == "fatal":
                    self.close()
                    raise value if isinstance(value, L3EdgeError) else ModelError(str(value))
                if kind == "ready":
                    w.ready, self._model = True, value
                elif kind == "done":
                    done.append(value)
                    w.path = None
                continue
            if eof or w.process.sentinel in ready or not w.process.is_alive():
                w.process.join(5)
                how = describe_exit(w.process.exitcode)
                self._stop(w)
                if w.path is not None:
                    log.warning("%s: the worker process %s while processing this scan", w.path, how)
                    message = f"the worker process {how} while processing this scan"
                    done.append(failure(w.path, message, self._model))
                elif not w.ready:
                    self._startup_deaths += 1
                    if self._startup_deaths >= _STARTUP_DEATHS and not self._model:
                        self.close()
                        raise ModelError(
                            f"worker processes die while starting (the last {how}); a Python script that "
                            'calls l3edge.batch.run must do so under `if __name__ == "__main__":`'
                        )
                if self._respawn or not self._model:
                    self._spawn()
        return done

    def _check_timeouts(self) -> list[ScanOutcome]:
        if self.timeout is None:
            return []
        done = []
        now = time.monotonic()
        for w in list(self._workers):
            if w.path is not None and now - w.since > self.timeout:
                log.warning("%s: no answer after %g s; stopping its worker", w.path, self.timeout)
                done.append(failure(w.path, f"timed out after {self.timeout:g} s (--timeout)", self._model))
                w.path = None
                self._stop(w)
                if self._respawn:
                    self._spawn()
        return done

    def outcomes(self, paths: Sequence[str]) -> Iterator[ScanOutcome]:
        todo = deque(paths)
        left = len(todo)
        try:
            while left:
                for w in self._workers:
                    if w.ready and w.path is None and todo:
                        w.path, w.since = todo.popleft(), time.monotonic()
                        # If it died just now, its sentinel reports it on the next poll.
                        with contextlib.suppress(BrokenPipeError, OSError):
                            w.conn.send(w.path)
                self._respawn = bool(todo)
                busy = [w.since + self.timeout for w in self._workers if w.path is not None and self.timeout]
                for outcome in self._poll(min(busy) if busy else None) + self._check_timeouts():
                    left -= 1
                    yield outcome
        finally:
            self.close()

    def close(self) -> None:
        workers, self._workers = self._workers, []
        for w in workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                w.conn.send(None)
        end = time.monotonic() + 2.0
        for w in workers:
            w.process.join(max(0.0, end - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(5)
            w.conn.close()
