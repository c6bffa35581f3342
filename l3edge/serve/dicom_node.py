"""The DICOM node (pynetdicom): a storage SCP for CT and Verification that predicts each series it receives.

- C-STORE of CT Image Storage in every transfer syntax l3edge decodes; each instance goes to the spool
  (``l3edge.serve.spool``) before success is answered, so what was acknowledged is on disk.
- A series is complete when no instance of it has come for ``idle_s`` seconds. The end of an association
  does not complete it: a PACS may send one series over several associations, or several series in one.
  An aborted association marks its series; they are still predicted once idle, with a warning giving the
  instance count.
- Complete series are predicted on the shared worker pool; each result is appended to ``out`` (the batch
  writer: one complete line per series, fsync'ed) and, with ``send_to``, a Secondary Capture of the QA picture
  and an SR naming the slice are sent there (``l3edge.serve.sr``). Then the series leaves the spool.
- On start the spool's leftovers (a crash, a restart) are finished first; a series whose row is already in
  ``out`` is not predicted again.
Logs give UIDs of series, counts and times, never patient data.
"""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from l3edge.errors import InputError, L3EdgeError
from l3edge.output import ResultWriter
from l3edge.result import L3Result
from l3edge.serve.predictor import Predictor, WorkerCrash
from l3edge.serve.spool import Pending, Spool, check_uid

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_SUCCESS, _OUT_OF_RESOURCES, _CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


def readable_syntaxes() -> list[str]:
    """The transfer syntaxes l3edge decodes here (native, deflated, JPEG, JPEG-LS, JPEG 2000, RLE)."""
    from pydicom.uid import AllTransferSyntaxes

    from l3edge.dicom_decode import check_decodable

    out = []
    for ts in AllTransferSyntaxes:
        try:
            check_decodable("", ts)
        except InputError:
            continue
        out.append(str(ts))
    return out


@dataclass(frozen=True)
class NodeConfig:
    spool: Path
    out: Path
    ae_title: str = "L3EDGE"
    idle_s: float = 10.0
    send_to: str | None = None
    """``AE@HOST:PORT`` to send the Secondary Capture and SR to, or None."""


class DicomNode:
    """The storage SCP, its spool, and the thread that predicts idle series."""

    def __init__(self, predictor: Predictor, config: NodeConfig) -> None:
        from l3edge.serve.sr import check_send_to

        if config.send_to:
            check_send_to(config.send_to)
        self.predictor, self.config = predictor, config
        self.writer = ResultWriter(config.out)
        self.writer.check()
        self.spool = Spool(config.spool.resolve())
        self._done_paths = self.writer.done_paths()
        self.writer.open()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._finishers = ThreadPoolExecutor(max_workers=predictor.workers, thread_name_prefix="l3edge-dicom")
        self._assoc_series: dict[int, set[Path]] = {}
        self._server: Any = None
        self._monitor = threading.Thread(target=self._watch, name="l3edge-dicom-idle", daemon=True)

    def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (returns at once; the SCP runs in its own threads)."""
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO lines come per instance
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = 32
        ae.add_supported_context(CT_IMAGE_STORAGE, readable_syntaxes())
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_RELEASED, self._on_released),
        ]
        pending = self.spool.waiting()
        if pending:
            log.warning("%d series left in the spool %s: finishing them", pending, self.spool.root)
        self._server = ae.start_server((host, port), block=False, evt_handlers=handlers)
        self._monitor.start()

    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            study = check_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
            series = check_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
            sop = check_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
        except Exception as exc:
            log.warning("C-STORE refused: %s", exc if isinstance(exc, InputError) else type(exc).__name__)
            return _CANNOT_UNDERSTAND
        try:
            path = self.spool.store(study, series, sop, event.encoded_dataset())
        except OSError as exc:
            log.error(
                "C-STORE of an instance of series %s: cannot write the spool (%s)", series, exc.strerror
            )
            return _OUT_OF_RESOURCES
        self._assoc_series.setdefault(id(event.assoc), set()).add(path.parent)
        return _SUCCESS

    def _on_aborted(self, event: Any) -> None:
        folders = self._assoc_series.pop(id(event.assoc), set())
        if folders:
            log.warning("association aborted while delivering %d series", len(folders))
            self.spool.mark_aborted(folders)

    def _on_released(self, event: Any) -> None:
        self._assoc_series.pop(id(event.assoc), None)

    def _watch(self) -> None:
        while not self._stop.wait(min(0.5, self.config.idle_s / 4)):
            for pending in self.spool.take_idle(self.config.idle_s):
                self._finishers.submit(self._finish, pending)

    def _finish(self, pending: Pending) -> None:
        """Predict one series, send the result back, write its row, then let the spool forget it."""
        path = str(pending.folder)
        if pending.leftover and path in self._done_paths:  # its row was written before a restart: clean up
            self.spool.done(pending)
            return
        n = sum(1 for _ in pending.folder.glob("*.dcm"))
        qa_dir = self.spool.root / ".qa" / pending.series_uid
        options: dict[str, Any] = {}  # the folder holds this one series
        if self.config.send_to:  # the QA picture travels as the Secondary Capture
            options["qa_dir"] = str(qa_dir)
        try:
            result = self.predictor.submit(path, options).result()[0]
        except (L3EdgeError, WorkerCrash) as exc:
            text = " ".join(str(exc).split())
            result = L3Result.failure(path, text, {"name": self.predictor.locator.metadata.name})
        extra = []
        if pending.aborted:
            extra.append(f"the association was aborted mid-series: predicted from the {n} instances received")
        if result.ok and self.config.send_to:
            extra += self._send_back(pending, result)
        result = replace(result, warnings=(*result.warnings, *extra), qa_path=None)
        with self._write_lock:
            self.writer.write(result)
        shutil.rmtree(qa_dir, ignore_errors=True)
        self.spool.done(pending)
        log.info(
            "series %s: %d instances, found=%s, error=%s",
            pending.series_uid,
            n,
            result.found,
            result.error is not None,
        )

    def _send_back(self, pending: Pending, result: L3Result) -> list[str]:
        """Send the SC and SR; returns warnings (a send that failed does not lose the row)."""
        import pydicom

        from l3edge.serve.sr import level_report, qa_capture, send

        assert self.config.send_to is not None
        try:
            name = f"{result.sop_instance_uid}.dcm" if result.sop_instance_uid else None
            ref_path = pending.folder / name if name else next(pending.folder.glob("*.dcm"))
            ref = pydicom.dcmread(ref_path, stop_before_pixels=True)
            datasets = [level_report(ref, result)]
            if result.qa_path:
                datasets.insert(0, qa_capture(ref, Path(result.qa_path), result))
            send(datasets, self.config.send_to, self.config.ae_title)
        except (OSError, ValueError, AttributeError, StopIteration) as exc:
            log.error(
                "series %s: sending the result to %s failed: %s", pending.series_uid, self.config.send_to, exc
            )
            return [f"sending the result to {self.config.send_to} failed ({type(exc).__name__})"]
        return []

    def wait(self) -> None:
        """Block until :meth:`stop` (or Ctrl-C)."""
        while not self._stop.wait(1.0):
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        self._finishers.shutdown(wait=True, cancel_futures=True)
        self.writer.close()
