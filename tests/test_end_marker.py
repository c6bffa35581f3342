"""The end-marker check of compressed frames: a pad byte after FF D9 (00, or another value as some writers put
there) is no truncation; a frame cut short still is, however it is padded. Every codec the check covers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless

from l3edge.dicom_decode import has_end_marker
from l3edge.scan import read_projection
from tests.dicom_factory import JPEG_LOSSLESS, JPEG_LS_LOSSLESS, make_volume, write_series

_PX = np.random.default_rng(0).integers(0, 2000, (32, 40)).astype(np.uint16)
ENCODERS: dict[str, Callable[[], bytes]] = {
    "jpeg-baseline": lambda: bytes(imagecodecs.jpeg8_encode((_PX // 16).astype(np.uint8), level=95)),
    "jpeg-lossless": lambda: bytes(imagecodecs.ljpeg_encode(_PX)),
    "jpeg-ls": lambda: bytes(imagecodecs.jpegls_encode(_PX)),
    "jpeg2000": lambda: bytes(imagecodecs.jpeg2k_encode(_PX, level=0, codecformat="j2k")),
}
SYNTAXES = {"jpeg-lossless": JPEG_LOSSLESS, "jpeg-ls": JPEG_LS_LOSSLESS, "jpeg2000": JPEG2000Lossless}
PADS = {"none": b"", "00": b"\x00", "90": b"\x90"}


def _flip_parity(cs: bytes) -> bytes:
    """The same image in a codestream one byte longer or shorter modulo 2: a comment segment of one
    character (5 bytes in JPEG / JPEG-LS after SOI, 7 bytes in JPEG 2000 after SIZ) that decoders skip."""
    if cs.startswith(b"\xff\x4f"):  # J2K SOC, then SIZ: marker, length (2 bytes, counting itself), content
        at = 4 + int.from_bytes(cs[4:6], "big")
        return cs[:at] + b"\xff\x64\x00\x05\x00\x01x" + cs[at:]  # COM: Lcom 5, Rcom 1 (latin text), "x"
    return cs[:2] + b"\xff\xfe\x00\x03x" + cs[2:]  # COM: length 3, "x"


def _as_stored(cs: bytes, pad: bytes) -> bytes:
    """``cs`` as a DICOM fragment would hold it with ``pad`` after it: the fragment's length is even, so a
    pad byte follows an odd-length codestream only, and none follows an even one."""
    if (len(cs) + len(pad)) % 2:
        cs = _flip_parity(cs)
    frame = cs + pad
    assert len(frame) % 2 == 0
    return frame


def _cut(cs: bytes) -> bytes:
    """The codestream of a transfer cut short: two thirds of it, in the middle of the coded data."""
    return cs[: len(cs) * 2 // 3]


@pytest.mark.parametrize("pad", sorted(PADS))
@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_a_padded_end_marker_is_found(codec: str, pad: str) -> None:
    cs = ENCODERS[codec]()
    assert cs.endswith(b"\xff\xd9")
    frame = _as_stored(cs, PADS[pad])
    assert has_end_marker(frame)
    assert not has_end_marker(_as_stored(_cut(cs), PADS[pad]))


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_what_a_pad_cannot_explain_is_a_truncation(codec: str) -> None:
    cs = ENCODERS[codec]()
    if len(cs) % 2 == 0:
        cs = _flip_parity(cs)
    assert has_end_marker(cs + b"\x90")  # odd codestream + one pad byte: even, as DICOM stores it
    even = _flip_parity(cs)
    assert not has_end_marker(even + b"\x90")  # an odd length: that byte pads nothing
    assert not has_end_marker(cs + b"\x90\x90")  # two bytes of something after the marker
    assert has_end_marker(even + b"\x00\x00")  # runs of 00 (padded further) were always accepted
    assert not has_end_marker(cs[:-1]) and not has_end_marker(cs[:-2])


def _series(folder: Path, codec: str, change: Callable[[bytes], bytes] | None = None) -> Path:
    """A 4-slice series in ``codec`` whose frames are ``change(codestream)`` (without a pad)."""
    spec = write_series(folder, make_volume(nz=4, ny=32, nx=40), transfer_syntax=SYNTAXES[codec])
    for f in spec.files if change is not None else ():
        ds = pydicom.dcmread(f)
        (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
        cs = frame[: frame.rindex(b"\xff\xd9") + 2]  # the codestream without the pad pydicom wrote
        ds.PixelData = encapsulate([change(cs)])
        ds.save_as(f)
    return spec.folder


@pytest.mark.parametrize("pad", sorted(PADS))
@pytest.mark.parametrize("codec", sorted(SYNTAXES))
def test_padded_frames_read_without_a_warning(tmp_path: Path, codec: str, pad: str) -> None:
    ref = read_projection(_series(tmp_path / "ref", codec))
    proj = read_projection(_series(tmp_path / "s", codec, lambda cs: _as_stored(cs, PADS[pad])))
    assert proj.series.warnings == ()
    np.testing.assert_array_equal(proj.mip_hu, ref.mip_hu)


@pytest.mark.parametrize("pad", sorted(PADS))
def test_a_cut_frame_still_warns_whatever_its_pad(tmp_path: Path, pad: str) -> None:
    # JPEG Lossless (the real series' codec) decodes a cut frame, so the end marker is the only sign of it.
    proj = read_projection(
        _series(tmp_path / "s", "jpeg-lossless", lambda cs: _as_stored(_cut(cs), PADS[pad]))
    )
    (w,) = proj.series.warnings
    assert w.startswith("4 slices: compressed frame ends without its end marker")
