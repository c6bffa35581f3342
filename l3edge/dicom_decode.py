"""Slice pixels -> frontal MIP rows, on every core. Imports pydicom (fallback decoder) and imagecodecs.

- Uncompressed little-endian slices: the pixel values are read straight into numpy at the offset the header
  pass recorded (no second parse).
- JPEG 2000, JPEG-LS, JPEG (baseline, extended, lossless) and RLE frames are cut out of their items and
  decoded by ``imagecodecs``, which releases the GIL, so a thread pool decodes one slice per core. The
  result is conformed to what pydicom returns (dtype from BitsAllocated / PixelRepresentation, J2K and
  JPEG-LS sign correction, unused high bits): the same stored values, pixel for pixel.
- Anything else (deflated or big-endian datasets, HTJ2K, a frame imagecodecs refuses) goes to pydicom's
  own decoders (pylibjpeg plugins), also in the pool.
Each slice is reduced to its MIP row as soon as it is decoded, so memory does not grow with the series.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder, pixel_array
from pydicom.pixels.utils import get_j2k_parameters
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from l3edge.dicom_header import NATIVE_LE, collect_warnings, quiet
from l3edge.dicom_select import Header
from l3edge.errors import InputError
from l3edge.orientation import InPlane, mip_row
from l3edge.sources import Source

log = logging.getLogger(__name__)

_INT_DTYPES = {
    (8, False): "u1",
    (8, True): "i1",
    (16, False): "<u2",
    (16, True): "<i2",
    (32, False): "<u4",
    (32, True): "<i4",
}
_PLUGIN_HINT = 'pip install "pylibjpeg[all]" (JPEG, JPEG-LS, JPEG 2000, RLE decoders)'
_J2K = set(JPEG2000TransferSyntaxes[:2])  # 4.90, 4.91 (HTJ2K and the multi-component ones go to pydicom)
_JLS = set(JPEGLSTransferSyntaxes)
_JPEG = set(JPEGTransferSyntaxes)
_FAST = _J2K | _JLS | _JPEG | {RLELossless}
_END_MARKER = b"\xff\xd9"  # EOI (JPEG, JPEG-LS) and EOC (JPEG 2000) are the same two bytes
AIR_SAMPLE_SLICES = 24
"""About this many slices (evenly spread) give pixels for the air check (``l3edge.hucheck``)."""
AIR_SAMPLE_PX = 64
"""... a grid of about 64 x 64 of their pixels (every 8th along each axis of a 512 x 512 slice)."""


def _imagecodecs() -> ModuleType | None:
    try:
        import imagecodecs
    except ImportError:  # no wheel for this platform: pydicom decodes everything (slower, same pixels)
        return None
    return imagecodecs


def default_threads() -> int:
    """The CPUs this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def ts_name(ts: str) -> str:
    try:
        return f"{UID(ts).name} ({ts})" if UID(ts).is_transfer_syntax else ts
    except Exception:
        return ts or "unknown"


def check_decodable(where: object, ts: str) -> None:
    """Raises InputError when no decoder can read transfer syntax ``ts``."""
    if ts in NATIVE_LE or (ts in _FAST and _imagecodecs() is not None):
        return
    try:
        decoder = get_decoder(UID(ts))
    except Exception as exc:
        raise InputError(
            f"{where}: transfer syntax {ts_name(ts)} is not supported; convert the series "
            "to uncompressed or JPEG 2000 / JPEG-LS / RLE DICOM"
        ) from exc
    if not decoder.is_available:
        raise InputError(f"{where}: no decoder installed for transfer syntax {ts_name(ts)}; {_PLUGIN_HINT}")


def _fix_unused_bits(arr: np.ndarray, h: Header) -> np.ndarray:
    """Mirror pydicom: values live in the low BitsStored bits; sign-extend or mask the rest."""
    shift = h.bits_allocated - h.bits_stored
    if shift <= 0 or h.bits_stored < 1:
        return arr
    if h.signed:
        return (arr << shift) >> shift
    return arr & np.array((1 << h.bits_stored) - 1, dtype=arr.dtype)


def _read_native(h: Header, source: Source, fix: bool = True) -> np.ndarray:
    assert h.pixel_offset is not None
    n = h.rows * h.cols
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
        if source.archive is None:
            arr = np.fromfile(h.path, dtype=dtype, count=n, offset=h.pixel_offset)
        else:
            data = source.read_range(h.path, h.pixel_offset, nbytes)
            arr = np.frombuffer(data[: len(data) - len(data) % dtype.itemsize], dtype=dtype)
    except OSError as exc:
        raise InputError(f"{h.path}: cannot read pixel data ({type(exc).__name__})") from exc
    if arr.size < n:
        raise InputError(f"{h.path}: file is truncated (pixel data ends early); export the series again")
    arr = arr.reshape(h.rows, h.cols)
    return _fix_unused_bits(arr, h) if fix else arr


def _stored_row(h: Header, source: Source, geo: InPlane) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(stored pixels, their MIP row, decoder warnings) of one slice."""
    if not h.signed and h.slope > 0:
        # Unsigned: mask unused high bits only if some are set. The row holds each column's maximum, so a
        # row below 2**BitsStored means no pixel has them (saves a pass over the slice).
        px, warn = read_pixels(h, source, fix=False)
        row = mip_row(px, geo)
        if h.bits_stored < h.bits_allocated and int(row.max()) >= 1 << h.bits_stored:
            px = _fix_unused_bits(px, h)
            row = mip_row(px, geo)
        return px, row, warn
    px, warn = read_pixels(h, source)
    return px, mip_row(px, geo, use_min=h.slope < 0), warn


def _shift_sign(arr: np.ndarray, precision: int) -> np.ndarray:
    shift = 8 * arr.dtype.itemsize - precision
    return (arr << shift) >> shift if shift > 0 else arr


def _jls_precision(frame: bytes, default: int) -> int:
    at = frame.find(b"\xff\xf7")  # SOF55, the JPEG-LS frame header: length (2 bytes), then P
    return frame[at + 4] if at >= 0 and at + 4 < len(frame) else default


def _conform(arr: np.ndarray, h: Header, frame: bytes, fix: bool = True) -> np.ndarray:
    """Decoded frame -> the stored values pydicom's ``pixel_array`` gives for this slice."""
    dtype = np.dtype(_INT_DTYPES[(h.bits_allocated, h.signed)])
    arr = arr.view(dtype) if arr.dtype.itemsize == dtype.itemsize else arr.astype(dtype)
    ts = h.transfer_syntax
    if ts in _J2K:  # a codestream's signedness may disagree with PixelRepresentation (pydicom fixes it so)
        info = get_j2k_parameters(frame)
        if bool(info.get("is_signed", h.signed)) != h.signed:
            arr = _shift_sign(arr, int(info.get("precision", h.bits_stored)))
    elif ts in _JLS and h.signed:  # JPEG-LS has no sign: signed data always decodes as unsigned
        arr = _shift_sign(arr, _jls_precision(frame, h.bits_stored))
    elif fix:
        arr = _fix_unused_bits(arr, h)
    return arr


def has_end_marker(frame: bytes) -> bool:
    """Whether a compressed frame (JPEG, JPEG-LS, or a JPEG 2000 codestream) ends with its end marker (EOI /
    EOC, ``FF D9``); one without it was cut short, even when it still decodes.

    DICOM stores a frame in fragments of even length (PS3.5 A.4), so an odd-length codestream gets one pad
    byte after its marker: 00 by the standard, another value from some writers (a vendor's JPEG Lossless
    series ends ``FF D9 90``). So the marker ends at ``len``, or at ``len - 1`` when the frame's length is
    even: only then is the last byte a pad (an odd length with the marker at ``len - 1`` has a byte that pads
    nothing). Runs of 00 after the marker (writers that pad a fragment further) are accepted too, as before.
    """
    if frame.endswith(_END_MARKER):
        return True
    if len(frame) % 2 == 0 and frame[-3:-1] == _END_MARKER:
        return True
    return frame.rstrip(b"\x00").endswith(_END_MARKER)


def _decode_fast(
    h: Header, source: Source, codecs: ModuleType, fix: bool = True
) -> tuple[np.ndarray, list[str]]:
    assert h.pixel_offset is not None
    data = source.read_range(h.path, h.pixel_offset, None)
    frame = next(generate_frames(data, number_of_frames=1))
    ts = h.transfer_syntax
    if ts in _J2K:
        arr = codecs.jpeg2k_decode(frame, numthreads=1)
    elif ts in _JLS:
        arr = codecs.jpegls_decode(frame)
    elif ts in _JPEG:
        arr = codecs.jpeg_decode(frame)
    else:  # RLE: segments of bytes, most significant first; imagecodecs interleaves them into `dtype`
        dtype = np.dtype(_INT_DTYPES[(h.bits_allocated, h.signed)])
        arr = np.frombuffer(codecs.dicomrle_decode(frame, dtype), dtype=dtype)
    arr = np.asarray(arr)
    if arr.shape != (h.rows, h.cols) and not (arr.ndim == 1 and arr.size == h.rows * h.cols):
        raise ValueError(f"decoded shape {arr.shape}")
    notes = []
    if ts != RLELossless and not has_end_marker(frame):
        notes.append("compressed frame ends without its end marker (truncated data); decoded anyway")
    return _conform(arr.reshape(h.rows, h.cols), h, frame, fix), notes


def _decode_pydicom(h: Header, source: Source) -> np.ndarray:
    try:
        if source.archive is None:
            arr = pixel_array(str(h.path))
        else:
            arr = pixel_array(io.BytesIO(source.read_all(h.path)))
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # decoders raise assorted types; the Rust RLE plugin panics (BaseException)
        raise InputError(
            f"{h.path}: cannot decode {ts_name(h.transfer_syntax)} pixel data "
            f"({type(exc).__name__}); the file is corrupt or needs a decoder: {_PLUGIN_HINT}"
        ) from exc
    if arr.shape != (h.rows, h.cols):
        raise InputError(f"{h.path}: decoded pixel data has shape {arr.shape}, header says {h.rows}x{h.cols}")
    return arr


def read_pixels(h: Header, source: Source | None = None, fix: bool = True) -> tuple[np.ndarray, list[str]]:
    """Stored (not rescaled) 2D pixel values of one slice, and the decoder's warnings about it.
    ``fix=False`` may leave unused high bits as stored (the caller checks whether any are set).

    Raises:
        InputError: truncated or undecodable pixel data.
    """
    src = source or Source(h.path.parent)
    if h.pixel_offset is not None and not h.encapsulated:
        return _read_native(h, src, fix), []
    codecs = _imagecodecs()
    with collect_warnings() as sink:
        if h.pixel_offset is not None and h.transfer_syntax in _FAST and codecs is not None:
            try:
                arr, notes = _decode_fast(h, src, codecs, fix)
                return arr, sink + notes
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - damaged or unusual frame: pydicom gets its chance
                log.debug("%s: imagecodecs failed (%s); trying pydicom", h.path, type(exc).__name__)
                arr = _decode_pydicom(h, src)
                return arr, [*sink, f"imagecodecs could not decode it ({type(exc).__name__}), pydicom did"]
        arr = _decode_pydicom(h, src)
        return arr, list(sink)


@dataclass(frozen=True)
class Rows:
    """What reading a series' pixels gives."""

    mip_hu: np.ndarray
    """float32 [n_slices, n_cols]: each slice's frontal MIP row in HU, in the order the headers came."""
    air_samples: np.ndarray
    """float32: HU of a sparse grid of pixels of a few slices (for ``l3edge.hucheck``)."""
    warnings: tuple[str, ...]
    """Decoder warnings, one line per kind: how many slices, what, and the first file."""


def _check_rescale(h: Header) -> None:
    if h.slope == 0.0 or abs(h.slope) > 1e4 or abs(h.intercept) > 1e6:
        raise InputError(
            f"{h.path}: implausible RescaleSlope {h.slope:g} / RescaleIntercept "
            f"{h.intercept:g}; the slice cannot be converted to HU"
        )


def read_rows(
    headers: Sequence[Header],
    source: Source,
    geo: InPlane,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Rows:
    """Decode every slice (``threads`` at a time; None: every CPU) and reduce each to its MIP row.

    Raises:
        InputError: a slice cannot be read or converted to HU.
    """
    n = len(headers)
    n_cols = headers[0].rows if geo.x_axis == 0 else headers[0].cols
    mip = np.empty((n, n_cols), dtype=np.float32)
    step = max(1, n // AIR_SAMPLE_SLICES)
    grid = max(1, min(headers[0].rows, headers[0].cols) // AIR_SAMPLE_PX)
    samples: list[np.ndarray] = []
    notes: Counter[str] = Counter()
    first_file: dict[str, str] = {}
    for h in headers:
        _check_rescale(h)

    def one(i: int) -> tuple[int, np.ndarray, np.ndarray | None, list[str]]:
        h = headers[i]
        px, row, warn = _stored_row(h, source, geo)
        row = row.astype(np.float64) * h.slope + h.intercept
        s = None
        if i % step == 0:
            s = (px[::grid, ::grid].astype(np.float32) * h.slope + h.intercept).ravel()
        return i, row, s, warn

    def take(out: tuple[int, np.ndarray, np.ndarray | None, list[str]], done: int) -> None:
        i, row, s, warn = out
        mip[i] = row
        if s is not None:
            samples.append(s.astype(np.float32))
        for w in dict.fromkeys(warn):
            notes[w] += 1
            first_file.setdefault(w, str(headers[i].path))
        if on_progress is not None:
            on_progress(done, n)

    workers = max(1, min(threads or default_threads(), n))
    with quiet():
        if workers == 1:
            for i in range(n):
                take(one(i), i + 1)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="l3edge-decode") as pool:
                pending: deque[Future[Any]] = deque()
                nxt = 0
                try:
                    while nxt < n and len(pending) < 4 * workers:  # bounded: cancel fast, memory flat
                        pending.append(pool.submit(one, nxt))
                        nxt += 1
                    done = 0
                    while pending:
                        out = pending.popleft().result()
                        if nxt < n:
                            pending.append(pool.submit(one, nxt))
                            nxt += 1
                        done += 1
                        take(out, done)
                finally:
                    for f in pending:
                        f.cancel()
    warnings = tuple(
        f"{k} slice{'s' if k > 1 else ''}: {w} (first: {first_file[w]})" for w, k in notes.most_common()
    )
    air = np.concatenate(samples) if samples else np.empty(0, np.float32)
    return Rows(mip_hu=mip, air_samples=air, warnings=warnings)
