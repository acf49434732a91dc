"""Run folders on a local disk or any filesystem pyarrow opens by URI.

`output.dir` (checkpoints, metrics, results) may be a path every node sees (local
disk, NFS) or a URI: `s3://bucket/runs/x`, `gs://...`, `hdfs://...`, `file:///...`.
Writes are atomic: on a local disk through a temporary name and a rename; on object
storage a single PUT is atomic already, so files are written in place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from metaray.errors import MetarayError

CACHE_ENV = "METARAY_CACHE"  # where copies of remote data folders go (default ~/.cache/metaray)


class StorageError(MetarayError, OSError):
    """A path or URI that cannot be opened or read; the message names it."""


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's own filesystems (s3, gs, hdfs, file), else any fsspec one (memory, abfs, ...)."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as unknown_scheme:
        import fsspec.core

        try:
            fs, root = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as err:
            raise StorageError(f"cannot open {uri}: {unknown_scheme}; fsspec: {err}") from err
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root


class RunStore:
    """Files under one root folder, addressed by '/'-separated relative paths."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        try:
            if is_uri(location):
                self.fs, root = _from_uri(self.location)
            else:
                self.fs, root = pafs.LocalFileSystem(), str(Path(location).expanduser().absolute())
        except StorageError:
            raise
        except (pa.ArrowException, OSError, ValueError) as err:  # unknown scheme, no credentials, ...
            raise StorageError(f"cannot open {self.location}: {err}") from err
        self.root = root.rstrip("/") or "/"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, relpath: str = "") -> str:
        return f"{self.root}/{relpath}" if relpath else self.root

    def display(self, relpath: str = "") -> str:
        """The user's spelling of a path, for messages."""
        return f"{self.location.rstrip('/')}/{relpath}" if relpath else self.location

    def _info(self, relpath: str) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path(relpath))

    def is_file(self, relpath: str) -> bool:
        return self._info(relpath).type == pafs.FileType.File

    def is_dir(self, relpath: str = "") -> bool:
        return self._info(relpath).type == pafs.FileType.Directory

    def makedirs(self, relpath: str = "") -> None:
        self.fs.create_dir(self.path(relpath), recursive=True)

    def read_bytes(self, relpath: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(relpath)) as f:
                return f.read()
        except (pa.ArrowException, OSError) as err:
            raise StorageError(f"cannot read {self.display(relpath)}: {err}") from err

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode()

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Atomically: readers see the old content or the new, never a part."""
        parent = relpath.rpartition("/")[0]
        self.makedirs(parent)
        target = self.path(relpath)
        if not self.local:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = self.path(f"{parent}/.{uuid.uuid4().hex}.tmp" if parent else f".{uuid.uuid4().hex}.tmp")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, target)

    def write_text(self, relpath: str, text: str) -> None:
        self.write_bytes(relpath, text.encode())

    def dirs(self, pattern_prefix: str) -> list[str]:
        """Names of the sub-folders of the root that start with `pattern_prefix`, sorted."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root))
        return sorted(
            i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith(pattern_prefix)
        )

    def delete_dir(self, relpath: str) -> None:
        if self.is_dir(relpath):
            self.fs.delete_dir(self.path(relpath))

    def replace_dir(self, tmp: str, final: str) -> None:
        """Move folder `tmp` to `final` (a rename on a local disk)."""
        self.delete_dir(final)
        self.fs.move(self.path(tmp), self.path(final))


def write_bytes(location: str | Path, data: bytes) -> None:
    """Atomically write one file given by path or URI."""
    parent, _, name = str(location).rstrip("/").rpartition("/")
    RunStore(parent or ".").write_bytes(name, data)


def write_text(location: str | Path, text: str) -> None:
    write_bytes(location, text.encode())


def local_copy(uri: str) -> Path:
    """A local copy of the folder at `uri`, made once per machine and reused (the cache
    key is the URI: a changed remote folder needs a new URI or an emptied cache)."""
    cache = Path(os.environ.get(CACHE_ENV, "~/.cache/metaray")).expanduser() / "data"
    final = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if final.is_dir():
        return final
    store = RunStore(uri)
    if not store.is_dir():
        raise StorageError(f"data directory {uri} does not exist or is not a folder")
    tmp = cache / f".{final.name}.{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        pafs.copy_files(store.root, str(tmp), source_filesystem=store.fs, destination_filesystem=pafs.LocalFileSystem())
        tmp.rename(final)  # atomic; another process that got there first wins
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
