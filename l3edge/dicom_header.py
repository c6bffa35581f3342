"""DICOM headers -> ``Header`` records, parsed up to (not including) the pixel data. Imports pydicom.

Every file under a folder or in a zip archive is parsed with ``stop_before_pixels``, giving a small header
record per image file; the file position at that point is where the pixel data element starts, so the
record also says where the pixel values (uncompressed) or the encapsulated frames (compressed) begin.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
from pydicom.config import IGNORE, settings
from pydicom.datadict import dictionary_VR
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from l3edge.dicom_select import Header
from l3edge.errors import InputError
from l3edge.sources import Source

log = logging.getLogger(__name__)

NATIVE_LE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}
_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"}
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
_DECODER_LOGGERS = ("pydicom", "pylibjpeg", "openjpeg", "libjpeg", "rle", "imagecodecs")

HEADER_TAGS = [
    "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber", "Modality", "SOPClassUID", "ImageType",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "AcquisitionNumber", "SeriesNumber", "ConvolutionKernel",
    "SeriesDescription", "SliceThickness", "ContrastBolusAgent",
]  # fmt: skip
"""The only elements kept from a header (``specific_tags``): nothing else, patient data included, is read
into the dataset."""
_TAG_OF = {kw: Tag(kw) for kw in HEADER_TAGS}
"""The tags of HEADER_TAGS, looked up once: pydicom turns a keyword into a tag on every call (every file)."""
_HEADER_TAG_LIST = list(_TAG_OF.values())

_quiet_depth = 0
_local = threading.local()


def _route_warning(message: Any, category: Any, filename: str, lineno: int, *_: Any, **__: Any) -> None:
    """``warnings.showwarning`` while reading: a warning raised while a slice is decoded (in any thread) goes
    to that slice's sink (see ``collect_warnings``); any other is dropped (it may quote tag values)."""
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(" ".join(str(message).split())[:160])


@contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom and its decoder plugins while reading: their validation warnings may quote tag values
    (patient names), and a corrupt stream makes them log a full traceback. We raise one InputError instead.

    Python warnings raised inside ``collect_warnings`` (decoding one slice) are kept for the scan's warnings.
    Enter it once around a whole read, in the main thread: it changes process-wide settings.
    """
    global _quiet_depth
    if _quiet_depth:  # already inside (a whole folder's scan): Logger.setLevel per file would cost ~10%
        yield
        return
    _quiet_depth += 1
    old = settings.reading_validation_mode
    loggers = [logging.getLogger(name) for name in _DECODER_LOGGERS]
    levels = [lg.level for lg in loggers]
    settings.reading_validation_mode = IGNORE
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _route_warning
            yield
    finally:
        _quiet_depth -= 1
        settings.reading_validation_mode = old
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Collect the Python warnings raised in this thread (inside ``quiet``) into the list yielded."""
    sink: list[str] = []
    old = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = old


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "SH", "ST", "TM", "UI"}
_INT_VRS = {"US": ("<H", 2), "SS": ("<h", 2), "UL": ("<I", 4), "SL": ("<i", 4)}


def _get(ds: Any, keyword: str) -> Any:
    """An element's value, decoded here from its raw bytes when that is simple (text, or one little-endian
    integer); anything else through pydicom. pydicom's general conversion (hooks, validation, value
    classes) costs more than the rest of the header pass, and none of it matters for these elements."""
    elem = ds.get_item(_TAG_OF.get(keyword) or keyword)
    if elem is None:
        return None
    raw = elem.value
    if not isinstance(raw, bytes) or not ds.original_encoding[1]:
        return ds.get(keyword)
    vr = elem.VR or dictionary_VR(elem.tag)
    if vr in _TEXT_VRS:
        text = raw.decode("latin-1").strip(" \x00")
        return [v.strip(" \x00") for v in text.split("\\")] if "\\" in text else text
    if vr in _INT_VRS and len(raw) >= _INT_VRS[vr][1]:
        return struct.unpack_from(_INT_VRS[vr][0], raw)[0]
    return ds.get(keyword)


def _text(ds: Any, keyword: str) -> str:
    try:
        v = _get(ds, keyword)
        if v is None:
            return ""
        if isinstance(v, str | bytes) or not hasattr(v, "__iter__"):
            return str(v).strip()
        return "\\".join(str(x).strip() for x in v)
    except Exception:  # a malformed value reads as absent; the caller decides whether that matters
        return ""


def _int(ds: Any, keyword: str, default: int | None) -> int | None:
    try:
        v = _get(ds, keyword)
        return default if v is None or v == "" else int(v)
    except Exception:
        return default


def _floats(ds: Any, keyword: str, n: int) -> tuple[float, ...] | None:
    try:
        v = _get(ds, keyword)
        if v is None or v == "":
            return None
        vals = tuple(float(x) for x in (v if isinstance(v, list) or n > 1 else [v]))
    except Exception:
        return None
    return vals if len(vals) == n and all(math.isfinite(x) for x in vals) else None


def _image_type(ds: Any) -> tuple[str, ...]:
    try:
        v = _get(ds, "ImageType")
        if v is None:
            return ()
        return tuple(str(x).strip().upper() for x in (v.split("\\") if isinstance(v, str) else v))
    except Exception:
        return ()


def read_header(path: Path, source: Source | None = None) -> Header | None:
    """Parse one file's header. None when the file is not a DICOM image (not DICOM, no pixel data).

    Raises:
        InputError: the file starts like DICOM but its header cannot be parsed.
        OSError: the file cannot be opened.
    """
    src = source or Source(path.parent)
    with src.open_file(path) as fp:
        try:
            head = fp.read(132)
            if len(head) == 132 and head[128:132] == b"DICM":
                force = False
            elif len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00"):
                force = True  # a bare dataset without the 128-byte preamble (old exports)
            else:
                return None
            fp.seek(0)
            with quiet():
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force, specific_tags=_HEADER_TAG_LIST)
                pos = fp.tell()
                tail = fp.read(12)
                implicit, little = ds.original_encoding
                ts = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "")
                return _header_from(path, ds, ts, implicit, little, pos, tail)
        except InputError:
            raise
        except Exception as exc:  # pydicom raises many types on damaged files; the type name is enough
            raise InputError(f"{path}: damaged DICOM header ({type(exc).__name__})") from exc


def _header_from(
    path: Path, ds: Any, ts: str, implicit: bool | None, little: bool | None, pos: int, tail: bytes
) -> Header | None:
    deflated = ts == DeflatedExplicitVRLittleEndian
    offset = length = None
    encapsulated = False
    if not ts:  # no file meta: infer the syntax from how pydicom read it
        ts = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else "1.2.840.10008.1.2.2"
        )
    if deflated:
        pass  # pydicom inflated the stream into memory: no file offset; assume pixel data is present
    elif tail[:4] == _PIXEL_TAG_LE and little:
        if not implicit and tail[4:6] in _LONG_VRS and len(tail) == 12:
            length, offset = struct.unpack("<I", tail[8:12])[0], pos + 12
        elif implicit and len(tail) >= 8:
            length, offset = struct.unpack("<I", tail[4:8])[0], pos + 8
        else:
            raise InputError(f"{path}: damaged DICOM pixel data element")
        if length == 0xFFFFFFFF:
            encapsulated, length = True, None  # compressed frames in items from `offset` on
        elif ts not in NATIVE_LE:
            offset = None  # a defined length under a compressed syntax: let pydicom judge it
    elif tail[:4] != b"\x7f\xe0\x00\x10":  # not big-endian pixel data either: no image in this file
        return None
    signed = _int(ds, "PixelRepresentation", 0) == 1
    bits = _int(ds, "BitsAllocated", 16) or 0
    thickness = _floats(ds, "SliceThickness", 1)
    return Header(
        path=path,
        series_uid=_text(ds, "SeriesInstanceUID") or "(no SeriesInstanceUID)",
        sop_uid=_text(ds, "SOPInstanceUID") or None,
        instance_number=_int(ds, "InstanceNumber", None),
        modality=_text(ds, "Modality").upper(),
        sop_class=_text(ds, "SOPClassUID"),
        image_type=_image_type(ds),
        iop=_floats(ds, "ImageOrientationPatient", 6),
        ipp=_floats(ds, "ImagePositionPatient", 3),
        spacing=_floats(ds, "PixelSpacing", 2),
        rows=_int(ds, "Rows", 0) or 0,
        cols=_int(ds, "Columns", 0) or 0,
        bits_allocated=bits,
        bits_stored=_int(ds, "BitsStored", bits) or bits,
        signed=signed,
        samples=_int(ds, "SamplesPerPixel", 1) or 0,
        photometric=_text(ds, "PhotometricInterpretation").upper() or "MONOCHROME2",
        frames=_int(ds, "NumberOfFrames", 1) or 1,
        slope=(_floats(ds, "RescaleSlope", 1) or (1.0,))[0],
        intercept=(_floats(ds, "RescaleIntercept", 1) or (0.0,))[0],
        transfer_syntax=ts,
        pixel_offset=offset,
        pixel_length=length,
        encapsulated=encapsulated,
        acquisition_number=_int(ds, "AcquisitionNumber", None),
        series_number=_int(ds, "SeriesNumber", None),
        kernel=_text(ds, "ConvolutionKernel"),
        series_description=_text(ds, "SeriesDescription"),
        slice_thickness=thickness[0] if thickness and thickness[0] > 0 else None,
        contrast_agent=bool(_text(ds, "ContrastBolusAgent")),
    )


def scan_headers(source: Source) -> tuple[list[Header], int, int, int]:
    """Headers of every DICOM image file of ``source``.

    Returns (headers, files looked at, damaged DICOM files, entries that could not be examined).
    """
    files, skipped = source.files()
    headers: list[Header] = []
    damaged = 0
    with quiet():
        for f in files:
            try:
                h = read_header(f, source)
            except InputError as exc:
                damaged += 1
                log.debug("skipping %s", exc)
                continue
            except OSError:  # unreadable (permissions, vanished, encrypted member): counted, not fatal
                skipped += 1
                continue
            if h is not None:
                headers.append(h)
    return headers, len(files), damaged, skipped
