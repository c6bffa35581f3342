"""Where compiled models are cached, and what a later process finds there without reading the model.

The cache holds one folder per OpenVINO version and model content (:func:`cache_folder`); OpenVINO writes its
compiled blobs there, and the runtime writes the model's l3edge metadata beside them
(:func:`read_cached_metadata`), so that a process finding both compiles from the blob without parsing the IR.
The content's SHA-256 is remembered under the files' stat (:func:`content_digest`): a second process does not
read the weights to find its folder. No openvino here: the runtime passes its version in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "L3EDGE_CACHE_DIR"
CACHE_OFF = ("off", "0", "false", "no")
"""Values of ``$L3EDGE_CACHE_DIR`` that switch the compiled-model cache off."""
METADATA_FILE = "l3edge_metadata.json"
"""The model's rt_info metadata text, as read from the IR, in its cache folder."""

CacheDir = str | os.PathLike[str] | Literal[False] | None
"""Where compiled models are cached: a folder, False for no cache, None for the default (see
:func:`cache_root`)."""


def cache_root(cache_dir: CacheDir = None) -> Path | None:
    """The compiled-model cache folder: ``cache_dir``, else ``$L3EDGE_CACHE_DIR``, else the user's cache
    folder (``$XDG_CACHE_HOME/l3edge`` or ``~/.cache/l3edge`` on Linux, ``~/Library/Caches/l3edge`` on macOS,
    ``%LOCALAPPDATA%\\l3edge\\Cache`` on Windows). None when the cache is off (``cache_dir=False``, or
    ``L3EDGE_CACHE_DIR=off``)."""
    if cache_dir is False:
        return None
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV_VAR, "").strip()
    if env.lower() in CACHE_OFF:
        return None
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("l3edge", appauthor=False))


def _stat_key(files: tuple[Path, ...]) -> str:
    """What identifies these files' content without reading it: path, device, inode, size, mtime and ctime
    (ctime cannot be set back by a copy that keeps the mtime; a file replaced by a rename has a new inode)."""
    parts = []
    for p in files:
        st = p.stat()
        parts.append(f"{p.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a process reading it never sees half)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def content_digest(files: tuple[Path, ...], root: Path) -> str:
    """The SHA-256 over the SHA-256s of ``files``' contents, remembered in ``root/digests`` under their stat
    key, so that a later process with the same, untouched files reads 64 bytes instead of the weights.

    Raises:
        OSError: a file cannot be read.
    """
    memo = root / "digests" / _stat_key(files)
    try:
        known = memo.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{64}", known):
            return known
    except (OSError, UnicodeDecodeError):
        pass
    before = _stat_key(files)
    digest = hashlib.sha256()
    for part in files:
        digest.update(hashlib.sha256(part.read_bytes()).digest())
    if _stat_key(files) == before:  # not changed while it was read: worth remembering
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(memo, digest.hexdigest())
        except OSError as exc:
            log.debug("model digest not remembered in %s (%s)", memo.parent, exc.strerror or exc)
    return digest.hexdigest()


def cache_folder(xml: Path, weights: Path, cache_dir: CacheDir, openvino_version: str) -> Path | None:
    """The folder OpenVINO caches this model's compiled form in, created; None when the cache is off or the
    folder cannot be written (the model is then compiled on every load, as without a cache).

    The folder is keyed by the OpenVINO version and the SHA-256 of the IR's .xml and .bin, so a blob
    compiled by another OpenVINO or from another model (a model file replaced in place included) is never
    looked at. OpenVINO checks its blobs itself as well (device, compile options, its own build), and
    compiles afresh when a blob cannot be imported.
    """
    root = cache_root(cache_dir)
    if root is None:
        return None
    try:
        digest = content_digest((xml, weights), root)
    except OSError as exc:  # OpenVINO reports an unreadable model better: no cache for it
        log.info("compiled-model cache off: cannot read %s (%s)", xml, exc.strerror or exc)
        return None
    version = re.sub(r"[^A-Za-z0-9.]+", "_", openvino_version).strip("_")[:64]
    folder = root / f"openvino-{version}" / digest[:32]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.info("compiled-model cache off: cannot create %s (%s)", folder, exc.strerror or exc)
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        log.info("compiled-model cache off: %s is not writable", folder)
        return None
    return folder


def read_cached_metadata(folder: Path | None) -> str | None:
    """The metadata text a load of this model content wrote into its cache ``folder``, else None."""
    if folder is None:
        return None
    try:
        return (folder / METADATA_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_cached_metadata(folder: Path | None, text: str) -> None:
    """Keep the metadata of a model that was read, checked and compiled, for the next load (best effort)."""
    if folder is None:
        return
    try:
        _write_atomic(folder / METADATA_FILE, text)
    except OSError as exc:
        log.debug("model metadata not kept in %s (%s)", folder, exc.strerror or exc)
