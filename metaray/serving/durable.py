"""Writes that survive a power cut: a file or folder is fsynced, renamed into place, and its
parent folder fsynced, before the API acknowledges what it holds (POSIX; a no-op for
folders where the platform cannot open them)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder (so that the names in it are on disk)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # folders cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """`path` holds `data`, whole or not at all, on disk before this returns."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def sync_tree(folder: Path) -> None:
    """fsync every file in `folder` (one level) and the folder itself."""
    for path in folder.iterdir():
        fsync_path(path)
    fsync_path(folder)
