"""Omniglot (Lake et al. 2015) -> image classification task families, split by alphabet.

`archive: small` (the default) reads `DATA_DIR/omniglot/images_background_small{1,2}.zip`:
Greek and Latin are in both files (byte-identical) and are read once, which leaves 8
alphabets and 242 characters. `archive: background` reads the full background set
(`images_background.zip`, 30 alphabets, 964 characters), which holds every drawing of the
small files at the same path. 105x105 one-bit drawings, 20 per character. A corpus's
inputs are image ids (`omniglot/Alphabet/characterNN/FILE`), so episodes stay a few
strings; `pixels` turns ids into pixels in the process that needs them. With `rotations`,
the meta-train characters turned by 90, 180 and 270 degrees are classes of their own
(ids `ID@90`, ...), the augmentation of the Omniglot literature; held-out alphabets never are.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from metaray.data.sources import BuiltinSource, Corpus, DataError, held_out_split

ARCHIVES = {
    "small": ("omniglot/images_background_small1.zip", "omniglot/images_background_small2.zip"),
    "background": ("omniglot/images_background.zip",),
}
ROTATED, ROTATIONS = "@", (90, 180, 270)  # rotation augmentation: `ID@90` is drawing ID turned 90 degrees


@lru_cache(maxsize=4)
def omniglot_images(data_dir: str, archive: str = "small") -> dict[str, np.ndarray]:
    """Every drawing by key (`Alphabet/characterNN/FILE`), as (105, 105) uint8 (255: paper,
    0: ink); cached per process."""
    from PIL import Image

    images: dict[str, np.ndarray] = {}
    for name in ARCHIVES[archive]:
        path = Path(data_dir) / name
        if not path.is_file():
            raise DataError(f"{path} not found; set data.data_dir to a folder holding omniglot/ as in shared/data")
        with zipfile.ZipFile(path) as zipped:
            for member in zipped.namelist():
                parts = member.split("/")
                if not member.endswith(".png") or len(parts) != 4:
                    continue
                key = "/".join(parts[1:])  # Alphabet/characterNN/FILE.png: the same key in every file
                if key not in images:
                    with Image.open(io.BytesIO(zipped.read(member))) as image:
                        images[key] = np.asarray(image.convert("L"), dtype=np.uint8)
    if not images:
        raise DataError(f"no Omniglot drawings in {data_dir}/omniglot")
    return images


def _turned(images: dict[str, np.ndarray], key: str) -> np.ndarray:
    key, _, degrees = key.partition(ROTATED)
    if degrees not in ("", *map(str, ROTATIONS)):
        raise KeyError(key + ROTATED + degrees)
    return np.rot90(images[key], int(degrees or 0) // 90)


def _character(key: str) -> str:
    """The class of an image key: `Alphabet/characterNN`, with its rotation if turned."""
    path, _, degrees = key.partition(ROTATED)
    return path.rsplit("/", 1)[0] + (f"{ROTATED}{degrees}" if degrees else "")


@dataclass(frozen=True)
class Omniglot(BuiltinSource):
    """`omniglot/train|val|test`: the characters of the alphabets named for val and test,
    and of all the others for train."""

    archive: str = "small"  # small | background
    val_alphabets: tuple[str, ...] = ("Early_Aramaic",)
    test_alphabets: tuple[str, ...] = ("Korean", "Sanskrit", "Tagalog")
    rotations: bool = False  # omniglot/train: each character turned 90, 180, 270 degrees is a new class
    KIND: ClassVar[str] = "image"
    SPLITS: ClassVar[dict[str, str | None]] = dict.fromkeys(("train", "val", "test"))

    def __post_init__(self) -> None:
        if self.archive not in ARCHIVES:
            raise DataError(f"data.sources.{self.name}.archive must be one of {sorted(ARCHIVES)}, got {self.archive!r}")

    def images(self) -> dict[str, np.ndarray]:
        return omniglot_images(str(self.folder()), self.archive)

    def pixels(self, keys) -> np.ndarray:
        """(N, 105, 105) uint8 for image keys; `KEY@R` is drawing KEY turned R degrees."""
        images = self.images()
        try:
            return np.stack([_turned(images, key) for key in keys])
        except KeyError as err:
            raise DataError(f"no Omniglot drawing {err.args[0]!r} in {self.root}/omniglot ({self.archive})") from err

    def load(self, split: str) -> Corpus:
        keys = sorted(self.images())
        alphabets = sorted({k.split("/")[0] for k in keys})
        held_out = {"val": self.val_alphabets, "test": self.test_alphabets}
        where = f"data.sources.{self.name}.*_alphabets (Omniglot, archive {self.archive})"
        chosen = held_out_split(alphabets, held_out, split, where)
        keys = [k for k in keys if k.split("/")[0] in chosen]
        if split == "train" and self.rotations:  # each turned character a class (Santoro et al. 2016)
            keys += [f"{k}{ROTATED}{r}" for r in ROTATIONS for k in keys]
        characters = sorted({_character(k) for k in keys})
        index = {c: n for n, c in enumerate(characters)}
        labels = np.array([index[_character(k)] for k in keys], dtype=np.int64)
        groups = np.array([chosen.index(c.split("/")[0]) for c in characters], dtype=np.int64)
        ids = tuple(f"{self.name}/{k}" for k in keys)
        return Corpus(f"{self.name}/{split}", ids, labels, tuple(characters), groups)
