"""DICOM folder -> frontal MIP, streaming one slice at a time. The only runtime module that imports pydicom.

Two passes: (1) every regular file under the folder is parsed up to, but not including, its pixel data
(``stop_before_pixels``), giving a small header record per image file; (2) the chosen series' slices are
read one at a time, each reduced to its MIP row at once, so memory never grows with the volume.
For uncompressed little-endian files pass (1) also records where the pixel values start, and pass (2)
reads them with one ``np.fromfile``; compressed files go through pydicom's decoders (pylibjpeg plugins).
Series choice and slice ordering live in ``l3edge.dicom_select`` (pure logic on the header records).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.config import IGNORE, settings
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from l3edge.dicom_select import Header, Stack, select_series, stack_series
from l3edge.errors import InputError
from l3edge.orientation import canonical_slice, in_plane, mip_row
from l3edge.series import Projection, SeriesInfo

log = logging.getLogger(__name__)

_NATIVE_LE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}
_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"}
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
_INT_DTYPES = {
    (8, False): "u1",
    (8, True): "i1",
    (16, False): "<u2",
    (16, True): "<i2",
    (32, False): "<u4",
    (32, True): "<i4",
}
_PLUGIN_HINT = 'pip install "pylibjpeg[all]" (JPEG, JPEG-LS, JPEG 2000, RLE decoders)'


_DECODER_LOGGERS = ("pydicom", "pylibjpeg", "openjpeg", "libjpeg", "rle")


_quiet_depth = 0


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom and its decoder plugins while reading: their validation warnings may quote tag values
    (patient names), and a corrupt stream makes them log a full traceback. We raise one InputError instead."""
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
            warnings.simplefilter("ignore")
            yield
    finally:
        _quiet_depth -= 1
        settings.reading_validation_mode = old
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def list_files(folder: Path) -> tuple[list[Path], int]:
    """All regular files under ``folder`` (recursively, sorted), following symlinks but never a loop.

    Returns the files and the number of entries that could not be examined (unreadable folders, broken
    or looping links). FIFOs, sockets and devices are skipped: opening a FIFO would block forever.
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    files: list[Path] = []
    skipped = 0
    stack = [str(folder)]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:  # a symlink back to a folder already walked: a loop or a duplicate
                continue
            seen_dirs.add(key)
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            skipped += 1
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_dir():
                    subdirs.append(e.path)
                elif e.is_file():
                    fst = e.stat()
                    fkey = (fst.st_dev, fst.st_ino)
                    if fkey not in seen_files:
                        seen_files.add(fkey)
                        files.append(Path(e.path))
            except OSError:
                skipped += 1
        stack.extend(reversed(subdirs))
    return files, skipped


def _text(ds: Any, keyword: str) -> str:
    try:
        v = ds.get(keyword)
        return "" if v is None else str(v).strip()
    except Exception:  # a malformed value reads as absent; the caller decides whether that matters
        return ""


def _int(ds: Any, keyword: str, default: int | None) -> int | None:
    try:
        v = ds.get(keyword)
        return default if v is None or v == "" else int(v)
    except Exception:
        return default


def _floats(ds: Any, keyword: str, n: int) -> tuple[float, ...] | None:
    try:
        v = ds.get(keyword)
        if v is None or v == "":
            return None
        vals = tuple(float(x) for x in (v if n > 1 else [v]))
    except Exception:
        return None
    return vals if len(vals) == n and all(math.isfinite(x) for x in vals) else None


def _image_type(ds: Any) -> tuple[str, ...]:
    try:
        v = ds.get("ImageType")
        if v is None:
            return ()
        return tuple(str(x).strip().upper() for x in (v.split("\\") if isinstance(v, str) else v))
    except Exception:
        return ()


def read_header(path: Path) -> Header | None:
    """Parse one file's header. None when the file is not a DICOM image (not DICOM, no pixel data).

    Raises:
        InputError: the file starts like DICOM but its header cannot be parsed.
    """
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
            if len(head) == 132 and head[128:132] == b"DICM":
                force = False
            elif len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00"):
                force = True  # a bare dataset without the 128-byte preamble (old exports)
            else:
                return None
            fp.seek(0)
            with _quiet():
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
                pos = fp.tell()
                tail = fp.read(12)
                implicit, little = ds.original_encoding
                ts = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "")
                return _header_from(path, ds, ts, implicit, little, pos, tail)
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged files; the type name is enough (no PHI)
        raise InputError(f"{path}: damaged DICOM header ({type(exc).__name__})") from exc


def _header_from(
    path: Path, ds: Any, ts: str, implicit: bool | None, little: bool | None, pos: int, tail: bytes
) -> Header | None:
    deflated = ts == DeflatedExplicitVRLittleEndian
    offset = length = None
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
        if length == 0xFFFFFFFF or ts not in _NATIVE_LE:
            offset = None  # encapsulated (compressed) frames: decoded by pydicom
    elif tail[:4] != b"\x7f\xe0\x00\x10":  # not big-endian pixel data either: no image in this file
        return None
    signed = _int(ds, "PixelRepresentation", 0) == 1
    bits = _int(ds, "BitsAllocated", 16) or 0
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
    )


def scan_headers(folder: Path) -> tuple[list[Header], int, int, int]:
    """Headers of every DICOM image file under ``folder``.

    Returns (headers, files looked at, damaged DICOM files, entries that could not be examined).
    """
    files, skipped = list_files(folder)
    headers: list[Header] = []
    damaged = 0
    with _quiet():
        for f in files:
            try:
                h = read_header(f)
            except InputError as exc:
                damaged += 1
                log.debug("skipping %s", exc)
                continue
            except OSError:  # unreadable (permissions, vanished): counted, not fatal
                skipped += 1
                continue
            if h is not None:
                headers.append(h)
    return headers, len(files), damaged, skipped


def _ts_name(ts: str) -> str:
    try:
        return f"{UID(ts).name} ({ts})" if UID(ts).is_transfer_syntax else ts
    except Exception:
        return ts or "unknown"


def _check_decodable(folder: Path, ts: str) -> None:
    if ts in _NATIVE_LE:
        return
    try:
        decoder = get_decoder(UID(ts))
    except Exception as exc:
        raise InputError(
            f"{folder}: transfer syntax {_ts_name(ts)} is not supported; convert the series "
            "to uncompressed or JPEG 2000 / JPEG-LS / RLE DICOM"
        ) from exc
    if not decoder.is_available:
        raise InputError(f"{folder}: no decoder installed for transfer syntax {_ts_name(ts)}; {_PLUGIN_HINT}")


def _fix_unused_bits(arr: np.ndarray, h: Header) -> np.ndarray:
    """Mirror pydicom: values live in the low BitsStored bits; sign-extend or mask the rest."""
    shift = h.bits_allocated - h.bits_stored
    if shift <= 0 or h.bits_stored < 1:
        return arr
    if h.signed:
        return (arr << shift) >> shift
    return arr & np.array((1 << h.bits_stored) - 1, dtype=arr.dtype)


def read_pixels(h: Header) -> np.ndarray:
    """Stored (not rescaled) 2D pixel values of one slice.

    Raises:
        InputError: truncated or undecodable pixel data.
    """
    n = h.rows * h.cols
    if h.pixel_offset is not None:
        nbytes = n * (h.bits_allocated // 8)
        if h.pixel_length is not None and h.pixel_length < nbytes:
            raise InputError(
                f"{h.path}: pixel data is shorter than Rows x Columns ({h.pixel_length} bytes "
                f"for {h.rows}x{h.cols}); the file is damaged, export the series again"
            )
        if (h.bits_allocated, h.signed) not in _INT_DTYPES or h.samples != 1:
            raise InputError(
                f"{h.path}: unsupported pixel format ({h.bits_allocated}-bit, {h.samples} samples "
                "per pixel); l3edge reads 8/16/32-bit grey-level CT"
            )
        dtype = np.dtype(_INT_DTYPES[(h.bits_allocated, h.signed)])
        try:
            arr = np.fromfile(h.path, dtype=dtype, count=n, offset=h.pixel_offset)
        except OSError as exc:
            raise InputError(f"{h.path}: cannot read pixel data ({type(exc).__name__})") from exc
        if arr.size < n:
            raise InputError(f"{h.path}: file is truncated (pixel data ends early); export the series again")
        return _fix_unused_bits(arr.reshape(h.rows, h.cols), h)
    try:
        with _quiet():
            arr = pixel_array(str(h.path))
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except (
        BaseException
    ) as exc:  # decoders raise assorted types; the Rust RLE plugin panics (a BaseException)
        raise InputError(
            f"{h.path}: cannot decode {_ts_name(h.transfer_syntax)} pixel data "
            f"({type(exc).__name__}); the file is corrupt or needs a decoder: {_PLUGIN_HINT}"
        ) from exc
    if arr.shape != (h.rows, h.cols):
        raise InputError(f"{h.path}: decoded pixel data has shape {arr.shape}, header says {h.rows}x{h.cols}")
    return arr


def _stack(folder: Path, series_uid: str | None) -> tuple[Stack, int]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give a folder of DICOM files or a .nii/.nii.gz file")
    headers, n_files, damaged, skipped = scan_headers(folder)
    log.debug(
        "%s: %d files, %d DICOM images, %d damaged, %d skipped",
        folder,
        n_files,
        len(headers),
        damaged,
        skipped,
    )
    chosen, warnings_, n_series = select_series(folder, headers, series_uid, n_files, damaged, skipped)
    return stack_series(folder, chosen, warnings_), n_series


def read_projection(
    folder: Path, series_uid: str | None = None, on_progress: Callable[[int, int], None] | None = None
) -> Projection:
    """Frontal MIP of the best axial CT series under ``folder`` (see ``l3edge.scan.read_projection``)."""
    t0 = time.perf_counter()
    stack, _ = _stack(folder, series_uid)
    t_headers = time.perf_counter()
    for ts in sorted({h.transfer_syntax for h in stack.headers}):
        _check_decodable(folder, ts)
    first = stack.headers[0]
    geo = in_plane(stack.col_dir, stack.row_dir)  # array axis 0 runs along the column direction
    n = len(stack.headers)
    mip = np.empty((n, first.rows if geo.x_axis == 0 else first.cols), dtype=np.float32)
    with _quiet():
        for i, h in enumerate(stack.headers):
            if h.slope == 0.0 or abs(h.slope) > 1e4 or abs(h.intercept) > 1e6:
                raise InputError(
                    f"{h.path}: implausible RescaleSlope {h.slope:g} / RescaleIntercept "
                    f"{h.intercept:g}; the slice cannot be converted to HU"
                )
            row = mip_row(read_pixels(h), geo, use_min=h.slope < 0)
            mip[i] = row.astype(np.float64) * h.slope + h.intercept
            if on_progress is not None:
                on_progress(i + 1, n)
    t1 = time.perf_counter()
    log.debug("%s: headers %.0f ms, pixels %.0f ms", folder, 1e3 * (t_headers - t0), 1e3 * (t1 - t_headers))
    info = SeriesInfo(
        source="dicom",
        path=folder,
        series_instance_uid=first.series_uid,
        slice_files=tuple(h.path for h in stack.headers),
        slice_index=stack.slice_index,
        instance_numbers=tuple(h.instance_number for h in stack.headers),
        sop_instance_uids=tuple(h.sop_uid for h in stack.headers),
        warnings=stack.warnings,
    )
    return Projection(
        mip_hu=mip,
        z_mm=stack.z_mm,
        col_spacing_mm=stack.col_spacing_mm,
        series=info,
        timings_ms={"read_mip": 1e3 * (t1 - t0)},
    )


def read_slice_hu(path: Path) -> np.ndarray:
    """One slice file as HU float32, rows anterior -> posterior, columns patient right -> left."""
    h = read_header(path)
    if h is None or h.iop is None:
        raise InputError(f"{path}: not a DICOM image with ImageOrientationPatient")
    _check_decodable(path, h.transfer_syntax)
    geo = in_plane(np.asarray(h.iop[3:]), np.asarray(h.iop[:3]))
    hu = read_pixels(h).astype(np.float32) * np.float32(h.slope) + np.float32(h.intercept)
    return canonical_slice(hu, geo)
