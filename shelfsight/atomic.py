"""Atomic file writes: temporary file in the same folder, fsync, rename, fsync the folder.

A reader (or a power cut) sees the old file or the new one, never half of one. This is the
project's only implementation; everything that writes a file others read goes through it.
Temporary files are named ``.NAME.PID.tmp`` beside ``NAME`` (`temp_path`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """Where the atomic writers put ``path`` while they write it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def publish(done: str | Path, path: str | Path) -> Path:
    """Rename a complete, already fsynced file ``done`` to ``path`` and make the rename durable."""
    path = Path(path)
    os.replace(done, path)
    fsync_dir(path.parent)
    return path


def write_via(path: str | Path, produce: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``produce(tmp)`` to create the file at a temporary path (for writers that take a
    file name, such as Annoy's ``save``), fsync it, then atomically put it at ``path``.
    ``mode`` (e.g. 0o600 for device data): the file's permissions, whatever the umask."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        produce(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_with(path: str | Path, write: Callable[[IO[bytes]], None], mode: int | None = None) -> Path:
    """Call ``write(file)`` on a temporary binary file, then atomically put it at ``path``
    (with ``mode``: created with those permissions, so it is never readable by others)."""
    def produce(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
        with open(fd, "wb") as f:
            write(f)

    return write_via(path, produce, mode)


DEVICE_DATA_MODE = 0o600  # what a device keeps (events, photos, enrolments): its owner's only


def create_private(path: str | Path) -> None:
    """Create ``path`` empty with `DEVICE_DATA_MODE` unless it exists: a SQLite database made
    this way gives its -wal/-shm files the same mode, whatever the umask."""
    path = Path(path)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, DEVICE_DATA_MODE))


def write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    return write_with(path, lambda f: f.write(data), mode)


def write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode)


def replace_symlink(link: str | Path, target: str | Path) -> None:
    """Atomically make ``link`` a symlink to ``target`` (relative to the link's folder)."""
    link = Path(link)
    tmp = temp_path(link)
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
