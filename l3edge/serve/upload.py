"""An uploaded study on disk: its files written into a per-request folder, checked before any reader runs.

One part that is a zip archive (by its first bytes) stays a zip (read in place, as ``predict`` reads one);
one part named ``.nii``/``.nii.gz`` (or starting like one) is a NIfTI file; anything else, and every part of
a several-part upload, is a DICOM file in one folder. Client file names are never used as paths: they are
reduced to a safe base name for the scan's name, and DICOM parts are numbered.

A zip archive is refused before it is read when a member's name leads outside the archive, when it would
unpack to more than the limit, or when a member compresses implausibly well (a zip bomb).
"""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

from l3edge.errors import InputError, UsageError

MAX_RATIO = 200
"""A member larger than 1 MiB that compresses better than this is taken for a zip bomb (CT compresses ~2-6:1;
a zip of a DICOM folder with padded slices stays well under 50:1)."""
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00", b"n+2\x00")


@dataclass(frozen=True)
class Part:
    """One uploaded file: the client's file name (untrusted) and a readable binary file object."""

    filename: str
    file: IO[bytes]


def safe_name(filename: str | None, default: str = "upload") -> str:
    """A client file name reduced to a base name of letters, digits, ``.``, ``_`` and ``-`` (at most 80)."""
    base = PureWindowsPath(PurePosixPath(filename or "").name).name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:80]
    return name or default


def _head(f: IO[bytes], n: int = 348) -> bytes:
    f.seek(0)
    data = f.read(n)
    f.seek(0)
    return data


def _copy(f: IO[bytes], out: Path) -> None:
    f.seek(0)
    with open(out, "wb") as dst:
        shutil.copyfileobj(f, dst, 1 << 20)


def save_study(parts: Sequence[Part], folder: Path, max_unpacked: int) -> Path:
    """Write the upload into ``folder``; returns the scan path to predict: ``study.zip``, ``study.nii[.gz]``
    or the folder ``dicom`` (fixed names: a client's file name may hold patient data, and paths are logged).

    Raises:
        UsageError: no file, or a zip archive among several files.
        InputError: a zip archive that must not be read (see the module docstring).
    """
    if not parts:
        raise UsageError("no file in the upload: send a zip, a NIfTI file or DICOM files as multipart 'file'")
    if len(parts) == 1:
        part = parts[0]
        head = _head(part.file)
        lower = part.filename.lower()
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            out = folder / "study.zip"
            _copy(part.file, out)
            check_zip(out, safe_name(part.filename), max_unpacked)
            return out
        if lower.endswith((".nii", ".nii.gz")) or head[:2] == _GZIP_MAGIC or head[344:348] in _NIFTI_MAGIC:
            out = folder / ("study.nii.gz" if head[:2] == _GZIP_MAGIC else "study.nii")
            _copy(part.file, out)
            return out
    scan = folder / "dicom"
    scan.mkdir()
    for i, part in enumerate(parts):
        if _head(part.file, 4) in (b"PK\x03\x04", b"PK\x05\x06"):
            raise UsageError(
                "a zip archive among several files: send the zip alone, or the DICOM files alone"
            )
        _copy(part.file, scan / f"{i:06d}.dcm")
    return scan


def _outside(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or bool(PureWindowsPath(name).drive)


def check_zip(path: Path, name: str, max_unpacked: int) -> None:
    """Refuse a zip archive that must not be read (a member outside it, too large unpacked, a zip bomb).

    An archive that cannot be opened at all is left to the reader, which says so in its own words.

    Raises:
        InputError: one line naming the archive and what is wrong with it.
    """
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    outside = sum(_outside(i.filename) for i in infos)
    if outside:
        raise InputError(
            f"{name}: {outside} member(s) of the zip archive lead outside it (absolute or ..); refused"
        )
    total = sum(i.file_size for i in infos)
    if total > max_unpacked:
        raise InputError(
            f"{name}: the zip archive would unpack to {total / 2**20:.0f} MiB, over the limit of "
            f"{max_unpacked / 2**20:.0f} MiB; refused"
        )
    for i in infos:
        if i.file_size > 1 << 20 and i.file_size > MAX_RATIO * max(i.compress_size, 1):
            ratio = i.file_size / max(i.compress_size, 1)
            raise InputError(
                f"{name}: a member of the zip archive compresses {ratio:.0f}:1 (over {MAX_RATIO}:1), "
                "as a zip bomb does; refused"
            )
