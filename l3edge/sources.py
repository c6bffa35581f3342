"""Where a scan's files live: a folder (searched recursively) or a zip archive read in place.

A file is named by a ``Path`` either way. For a zip archive it is ``<archive>/<member>`` (for messages and
for the result's file names); ``open_entry`` maps it back to the member, so nothing is unpacked to disk.
No DICOM knowledge here (no pydicom): the readers above decide what the bytes mean.
"""

from __future__ import annotations

import os
import threading
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from l3edge.errors import InputError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
"""A zip archive starts with a local file header (or, when empty, the end of central directory record)."""


def is_zip(path: Path) -> bool:
    """True when ``path`` is a file that starts like a zip archive (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in ZIP_MAGIC
    except OSError:
        return False


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


class Source:
    """The files of one scan and a way to open them (thread-safe)."""

    def __init__(self, root: Path, archive: zipfile.ZipFile | None = None) -> None:
        self.root = root
        """The folder or the zip archive as given."""
        self._zip = archive
        self._lock = threading.Lock()

    @property
    def archive(self) -> Path | None:
        """The zip archive the files are members of (None for a folder)."""
        return self.root if self._zip is not None else None

    @classmethod
    def open(cls, path: Path) -> Source:
        """A folder's or a zip archive's files.

        Raises:
            InputError: the path is a file that is not a readable zip archive.
        """
        if path.is_dir():
            return cls(path)
        try:
            return cls(path, zipfile.ZipFile(path))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise InputError(
                f"{path}: not a readable zip archive ({type(exc).__name__}); check the download is complete"
            ) from exc

    def files(self) -> tuple[list[Path], int]:
        """The files (sorted) and the number of entries that could not be examined."""
        if self._zip is None:
            return list_files(self.root)
        names = sorted(i.filename for i in self._zip.infolist() if not i.is_dir())
        return [self.root / PurePosixPath(n) for n in names], 0

    def _member(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def open_file(self, path: Path) -> IO[bytes]:
        """A binary, seekable file object for one file (close it after use).

        Raises:
            OSError: unreadable (permissions, vanished, an encrypted or damaged zip member).
        """
        if self._zip is None:
            return open(path, "rb")
        try:
            with self._lock:  # ZipFile shares one file handle between its members
                return self._zip.open(self._member(path))
        except (zipfile.BadZipFile, RuntimeError, KeyError, ValueError, NotImplementedError) as exc:
            raise OSError(f"cannot open zip member ({type(exc).__name__})") from exc

    def read_range(self, path: Path, offset: int, length: int | None) -> bytes:
        """``length`` bytes of a file from ``offset`` (to the end when None).

        Raises:
            OSError: unreadable.
        """
        with self.open_file(path) as f:
            try:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
            except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:  # a damaged deflate stream
                raise OSError(f"damaged zip member ({type(exc).__name__})") from exc

    def read_all(self, path: Path) -> bytes:
        """The whole file, byte for byte (e.g. to export it)."""
        return self.read_range(path, 0, None)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def open_source(path: Path, archive: Path | None) -> Source:
    """The source a slice file listed in a ``SeriesInfo`` belongs to (its folder, or its zip archive).

    Raises:
        InputError: the archive can no longer be read.
    """
    return Source.open(archive) if archive is not None else Source(path.parent)
