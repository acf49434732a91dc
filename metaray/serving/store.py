"""The task store: each version of each served task as safetensors + JSON in a folder.

    ROOT/TASK_ID/v000001/{task.safetensors, task.json}   one adaptation (atomic: renamed into place)
    ROOT/TASK_ID/feedback/NNNNNNNNNNNNNNNN-HEX.json      corrected examples, each written atomically
    ROOT/TASK_ID/incarnation                             this creation of the id (a random hex string)

A task id is claimed by creating its folder (atomic on a POSIX filesystem, so of two
concurrent creates exactly one wins). A version is written to a temporary folder and
renamed to `vNNNNNN`, which fails if that version exists: two replicas re-adapting
the same task cannot overwrite each other. Feedback is on disk before it is
acknowledged, and each version records which feedback files it includes, so feedback
not yet adapted is found again after a restart. ROOT is a local or shared path.

A deleted id can be created again. Each creation writes a new incarnation, every
version records it, and every writer and cache says which incarnation it means: a
re-adaptation or a feedback of a deleted task never lands in the new one, and a cache
keyed by id, incarnation and version never serves the old one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from metaray.errors import MetarayError
from metaray.serving.durable import fsync_path, sync_tree, write_durably

TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # matched whole (fullmatch: no trailing newline)
TENSORS, META, INCARNATION = "task.safetensors", "task.json", "incarnation"
PENDING = ".pending"  # ROOT/.pending/TASK_ID: the task has feedback that no version includes yet
STALE_S = 3600.0  # temporary and deleted folders older than this are left over from a crash


class TaskNotFound(MetarayError, KeyError):
    """No task with this id (or it was deleted)."""


class TaskExists(FileExistsError):
    """The id is taken (another create won)."""


class CorruptTask(ValueError):
    """A task's files cannot be read; the message names the file."""


def check_task_id(task_id: str) -> str:
    if not TASK_ID.fullmatch(task_id):
        raise ValueError(f"task id {task_id!r} must be 1-64 letters, digits, '-' or '_' (first a letter or digit)")
    return task_id


def task_key(meta: dict) -> str:
    """A task version's cache key, `id@incarnation@version`: a task deleted and created
    again under its id never shares a key with the old one."""
    return f"{meta['id']}@{meta.get('incarnation', '')}@{meta['version']}"


@dataclass
class TaskVersion:
    """One adaptation of a task: tensors (prompt, prototypes, a linear head) and metadata (kind,
    labels, examples, included feedback, adaptation metrics)."""

    task_id: str
    version: int
    tensors: dict[str, torch.Tensor]
    meta: dict


class TaskStore:
    """`keep_versions`: the newest versions kept per task (older ones, and feedback files
    every kept version includes, are deleted after each new version)."""

    def __init__(self, root: str | Path, keep_versions: int = 3) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / PENDING).mkdir(exist_ok=True)
        self.keep_versions = max(keep_versions, 1)

    def _corrupt(self, task_id: str, path: Path, err: Exception) -> CorruptTask:
        """CorruptTask naming the file inside the store, never the store's own path (the
        message reaches HTTP clients)."""
        where = path.relative_to(self.root)
        return CorruptTask(f"task {task_id!r}: cannot read {where}: {str(err).replace(str(self.root), '<store>')}")

    def _dir(self, task_id: str) -> Path:
        return self.root / check_task_id(task_id)

    def claim(self, task_id: str) -> str:
        """Reserve a new id; TaskExists if it is taken. Returns this creation's incarnation."""
        folder = self._dir(task_id)
        try:
            folder.mkdir()
        except FileExistsError as err:
            raise TaskExists(f"task {task_id!r} already exists") from err
        incarnation = uuid.uuid4().hex
        write_durably(folder / INCARNATION, incarnation.encode())
        fsync_path(self.root)
        return incarnation

    def incarnation(self, task_id: str) -> str:
        """The id's current creation ("" for a task stored before incarnations, or one
        whose claim is still being written); TaskNotFound if there is no such task."""
        folder = self._dir(task_id)
        try:
            return (folder / INCARNATION).read_text()
        except FileNotFoundError:
            if not folder.is_dir():
                raise TaskNotFound(task_id) from None
            return ""

    def _expect(self, task_id: str, incarnation: str | None) -> str:
        """The current incarnation; TaskNotFound where it is not `incarnation` (that
        creation was deleted, and the id perhaps created again). None: any."""
        current = self.incarnation(task_id)
        if incarnation is not None and current != incarnation:
            raise TaskNotFound(task_id)
        return current

    def exists(self, task_id: str) -> bool:
        return self._dir(task_id).is_dir()

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and TASK_ID.fullmatch(p.name))

    def versions(self, task_id: str) -> list[int]:
        folder = self._dir(task_id)
        if not folder.is_dir():
            raise TaskNotFound(task_id)
        return sorted(int(p.name[1:]) for p in folder.glob("v[0-9]*") if p.name[1:].isdigit())

    def latest_version(self, task_id: str) -> int:
        """0 while the first adaptation is still running."""
        versions = self.versions(task_id)
        return versions[-1] if versions else 0

    def write_version(
        self, task_id: str, version: int, tensors: dict[str, torch.Tensor], meta: dict, incarnation: str | None = None
    ) -> None:
        """Atomically add version `version`; FileExistsError if another writer got there
        first, TaskNotFound if the task (or, given `incarnation`, that creation of it) is gone."""
        folder = self._dir(task_id)
        incarnation = self._expect(task_id, incarnation)
        tmp = folder / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
        except FileNotFoundError as err:  # deleted meanwhile
            raise TaskNotFound(task_id) from err
        try:
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
            (tmp / META).write_text(json.dumps({**meta, "id": task_id, "version": version, "incarnation": incarnation}))
            sync_tree(tmp)
            self._expect(task_id, incarnation)  # the last look before the version becomes visible
            try:
                os.rename(tmp, folder / f"v{version:06d}")  # fails where the version exists
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                raise FileExistsError(f"task {task_id!r} version {version} was written by another replica") from err
            fsync_path(folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._prune(task_id)

    def _prune(self, task_id: str) -> None:
        """Keep the newest `keep_versions` versions; delete older ones, and the feedback
        files that the oldest kept version includes (every newer one includes them too)."""
        folder = self._dir(task_id)
        versions = self.versions(task_id)
        for version in versions[: -self.keep_versions]:
            shutil.rmtree(folder / f"v{version:06d}", ignore_errors=True)
        try:
            included = self.read_meta(task_id, versions[-self.keep_versions :][0]).get("feedback", [])
        except (TaskNotFound, CorruptTask):
            return
        for name in included:
            (folder / "feedback" / name).unlink(missing_ok=True)

    def latest_good(self, task_id: str) -> dict:
        """The newest version's metadata whose files read (its tensor file's header opens);
        an unreadable newer one is skipped and named in `fallback_from`. CorruptTask if
        none reads, TaskNotFound while there is no version yet."""
        skipped, error = [], None
        for version in reversed(self.versions(task_id)):
            try:
                meta = self.check(task_id, version)
            except CorruptTask as err:
                skipped.append(version)
                error = error or err
                continue
            return {**meta, "fallback_from": skipped} if skipped else meta
        if error is not None:
            raise error
        raise TaskNotFound(task_id)

    def read_meta(self, task_id: str, version: int | None = None) -> dict:
        version = version or self.latest_version(task_id)
        path = self._dir(task_id) / f"v{version:06d}" / META
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as err:
            raise TaskNotFound(task_id) from err
        except (OSError, ValueError) as err:
            raise self._corrupt(task_id, path, err) from err

    def read(self, task_id: str, version: int | None = None) -> TaskVersion:
        version = version or self.latest_version(task_id)
        meta = self.read_meta(task_id, version)
        path = self._dir(task_id) / f"v{version:06d}" / TENSORS
        try:
            tensors = load_file(str(path))
        except FileNotFoundError as err:
            raise TaskNotFound(task_id) from err
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for bad files
            raise self._corrupt(task_id, path, err) from err
        return TaskVersion(task_id, version, tensors, meta)

    def check(self, task_id: str, version: int | None = None) -> dict:
        """A version's metadata (default: the latest), after checking that its tensor file
        opens (header only); CorruptTask names the file that does not."""
        meta = self.read_meta(task_id, version)
        path = self._dir(task_id) / f"v{meta['version']:06d}" / TENSORS
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for bad files
            raise self._corrupt(task_id, path, err) from err
        return meta

    def add_feedback(self, task_id: str, examples: list[dict], incarnation: str | None = None) -> str:
        """Persist corrected examples (atomically); returns the feedback file's name.
        TaskNotFound if the task (or, given `incarnation`, that creation of it) is gone."""
        self._expect(task_id, incarnation)
        folder = self._dir(task_id) / "feedback"
        try:
            folder.mkdir(exist_ok=True)
        except FileNotFoundError as err:
            raise TaskNotFound(task_id) from err
        name = f"{time.time_ns():016x}-{uuid.uuid4().hex[:8]}.json"
        hidden = folder / f".{name}"  # not feedback until renamed: the creation is checked first
        try:
            write_durably(hidden, json.dumps(examples).encode())
            self._expect(task_id, incarnation)
            os.replace(hidden, folder / name)
            fsync_path(folder)
            write_durably(self.root / PENDING / task_id, b"")
        except FileNotFoundError as err:  # deleted meanwhile
            raise TaskNotFound(task_id) from err
        finally:
            hidden.unlink(missing_ok=True)
        return name

    def pending_ids(self) -> list[str]:
        """Tasks with feedback that may not be adapted yet (what recovery looks at)."""
        return sorted(p.name for p in (self.root / PENDING).iterdir() if TASK_ID.fullmatch(p.name))

    def clear_pending(self, task_id: str) -> None:
        (self.root / PENDING / check_task_id(task_id)).unlink(missing_ok=True)

    def clean_stale(self, max_age_s: float = STALE_S) -> list[str]:
        """Remove temporary and deleted folders older than `max_age_s` (a crash's
        leftovers; younger ones may be another replica's write in flight)."""
        cutoff, removed = time.time() - max_age_s, []
        leftovers = [*self.root.glob(".deleted-*"), *self.root.glob("*/.tmp-*"), *self.root.glob("*/*/.*.json.*")]
        for path in leftovers:
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                    removed.append(str(path.relative_to(self.root)))
        return removed

    def feedback(self, task_id: str, exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, list[dict]]:
        """The task's feedback files, oldest first, but those named in `exclude` (already
        adapted; not read): name -> examples."""
        out = {}
        for path in sorted((self._dir(task_id) / "feedback").glob("[0-9a-f]*.json")):
            if path.name in exclude:
                continue
            try:
                out[path.name] = json.loads(path.read_text())
            except FileNotFoundError:  # the task was deleted meanwhile
                continue
            except ValueError as err:
                raise self._corrupt(task_id, path, err) from err
        return out

    def delete(self, task_id: str, incarnation: str | None = None) -> None:
        """Remove a task and all its versions (renamed away first, so readers never see
        half); given `incarnation`, only that creation of it (else TaskNotFound)."""
        folder = self._dir(task_id)
        self._expect(task_id, incarnation)
        trash = self.root / f".deleted-{task_id}-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except FileNotFoundError as err:
            raise TaskNotFound(task_id) from err
        fsync_path(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        self.clear_pending(task_id)
