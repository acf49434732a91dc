"""Omniglot (Lake et al. 2015) -> image classification task families, split by alphabet.

`DATA_DIR/omniglot/images_background_small{1,2}.zip`: 105x105 one-bit drawings, 20 per
character. Greek and Latin are in both files (byte-identical) and are read once, which
leaves 8 alphabets and 242 characters. A corpus's "texts" are image ids
(`Alphabet/characterNN/FILE`), so episodes stay a few strings; `omniglot_pixels` turns
ids into pixels in the process that needs them. With `data.omniglot_rotations`, the
meta-train characters turned by 90, 180 and 270 degrees are classes of their own (ids
`ID@90`, ...), the augmentation of the Omniglot literature; held-out alphabets never are.
"""

from __future__ import annotations

import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from metaray.data.sources import Corpus, DataError, SourceConfig

OMNIGLOT_ZIPS = ("omniglot/images_background_small1.zip", "omniglot/images_background_small2.zip")
ROTATED, ROTATIONS = "@", (90, 180, 270)  # rotation augmentation: `ID@90` is drawing ID turned 90 degrees


@lru_cache(maxsize=2)
def omniglot_images(data_dir: str) -> dict[str, np.ndarray]:
    """Every drawing by id, as (105, 105) uint8 (255: paper, 0: ink); cached per process."""
    from PIL import Image

    images: dict[str, np.ndarray] = {}
    for name in OMNIGLOT_ZIPS:
        path = Path(data_dir) / name
        if not path.is_file():
            raise DataError(f"{path} not found; set data.data_dir to a folder holding omniglot/ as in shared/data")
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if not member.endswith(".png") or len(parts) != 4:
                    continue
                key = "/".join(parts[1:])  # Alphabet/characterNN/FILE.png: the same id in both files
                if key not in images:
                    with Image.open(io.BytesIO(archive.read(member))) as image:
                        images[key] = np.asarray(image.convert("L"), dtype=np.uint8)
    if not images:
        raise DataError(f"no Omniglot drawings in {data_dir}/omniglot")
    return images


def omniglot_pixels(ids, data_dir: str) -> np.ndarray:
    """(N, 105, 105) uint8 for image ids; `ID@R` is drawing ID turned R degrees (a multiple of 90)."""
    images = omniglot_images(data_dir)
    try:
        return np.stack([_turned(images, i) for i in ids])
    except KeyError as err:
        raise DataError(f"no Omniglot drawing {err.args[0]!r} in {data_dir}/omniglot") from err


def _turned(images: dict[str, np.ndarray], image_id: str) -> np.ndarray:
    key, _, degrees = image_id.partition(ROTATED)
    if degrees not in ("", *map(str, ROTATIONS)):
        raise KeyError(image_id)
    return np.rot90(images[key], int(degrees or 0) // 90)


def omniglot_corpus(src: SourceConfig, split: str) -> Corpus:
    """The characters of the split's alphabets (`data.omniglot_*_alphabets`; train: the rest)."""
    ids = sorted(omniglot_images(src.data_dir))
    alphabets = sorted({i.split("/")[0] for i in ids})
    unknown = set(src.omniglot_val_alphabets + src.omniglot_test_alphabets) - set(alphabets)
    if unknown:
        raise DataError(
            f"unknown Omniglot alphabet(s) {sorted(unknown)} in data.omniglot_*_alphabets; valid: {alphabets}"
        )
    held_out = {"val": src.omniglot_val_alphabets, "test": src.omniglot_test_alphabets}
    chosen = (
        [a for a in alphabets if a not in held_out["val"] + held_out["test"]] if split == "train" else held_out[split]
    )
    ids = [i for i in ids if i.split("/")[0] in chosen]
    if split == "train" and src.omniglot_rotations:  # each turned character a class (Santoro et al. 2016)
        ids += [f"{i}{ROTATED}{r}" for r in ROTATIONS for i in ids]
    characters = sorted({_character(i) for i in ids})
    index = {c: n for n, c in enumerate(characters)}
    labels = np.array([index[_character(i)] for i in ids], dtype=np.int64)
    groups = np.array([chosen.index(c.split("/")[0]) for c in characters], dtype=np.int64)
    return Corpus(f"omniglot/{split}", tuple(ids), labels, tuple(characters), groups)


def _character(image_id: str) -> str:
    """The class of an image id: `Alphabet/characterNN`, with its rotation if turned."""
    path, _, degrees = image_id.partition(ROTATED)
    return path.rsplit("/", 1)[0] + (f"{ROTATED}{degrees}" if degrees else "")
