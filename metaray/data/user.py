"""A user's own data as task families, by configuration alone (`data.sources.NAME`).

    data:
      sources:
        tickets: {format: csv, path: tickets.csv, text_column: body, label_column: queue, test_classes: 10}
        faq: {format: squad, path: faq.jsonl, val_articles: 2, test_articles: 4}
        shapes: {format: images, path: shapes.zip, test_groups: [hand_drawn]}

A source offers the family `NAME` (everything in `path`) and, where the options ask for
held-out parts, `NAME/train`, `NAME/val` and `NAME/test`: class-disjoint (a seeded draw of
`*_classes` classes, or the classes of the groups named in `*_groups`), or article-disjoint
for question answering. With `test_path` (text), `NAME/test` is that file, its
full-protocol support drawn from `NAME`. Relative paths are read under `data.data_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from metaray.data.files import TABLE_FORMATS, read_image_folder, read_qa, read_table, table_corpus
from metaray.data.sources import Corpus, DataError, load_source
from metaray.data.squad import Article, split_articles
from metaray.storage import is_uri

HELD_OUT = ("train", "val", "test")
BAD_IMAGES = ("refuse", "skip")


@dataclass(frozen=True)
class UserSource:
    """Options every user source shares; `format` picks the reader."""

    name: str = ""
    root: str = ""
    format: str = ""
    path: str = ""
    split_seed: int = 0  # the draw of held-out classes or articles
    KIND: ClassVar[str] = "classify"

    def location(self, path: str = "") -> str:
        path = path or self.path
        if not path:
            raise DataError(f"data.sources.{self.name}.path is not set: name the file or folder to read")
        if is_uri(path) or Path(path).expanduser().is_absolute() or not self.root:
            return str(Path(path).expanduser()) if not is_uri(path) else path
        return str(Path(self.root) / path)

    def held_out(self) -> bool:
        return False

    def splits(self) -> dict[str, str | None]:
        return {"": None, **({s: None for s in HELD_OUT} if self.held_out() else {})}


def class_split(corpus: Corpus, split: str, counts: tuple[int, int], seed: int, groups=None) -> Corpus:
    """The classes of `split`: a seeded draw of (val, test) class counts, or the classes of
    the named (val, test) group lists; train: all the others."""
    n = len(corpus.label_names)
    if groups is not None:
        both = set(groups[1]) & set(groups[2])
        if both:
            raise DataError(f"{corpus.name}: group(s) {sorted(both)} named for both val and test; name each once")
        part = {
            s: {i for i, g in enumerate(groups[0]) if g in names}
            for s, names in zip(("val", "test"), groups[1:], strict=True)
        }
    else:
        order = np.random.default_rng(seed).permutation(n)
        part = {"test": set(order[: counts[1]].tolist()), "val": set(order[counts[1] : counts[1] + counts[0]].tolist())}
    part["train"] = set(range(n)) - part["val"] - part["test"]
    if not part[split]:
        raise DataError(f"{corpus.name}/{split} would have no classes; change the source's val/test settings")
    keep = sorted(part[split])
    new = {c: i for i, c in enumerate(keep)}
    rows = [i for i, y in enumerate(corpus.labels) if int(y) in new]
    group_ids = corpus.class_groups[keep]
    return Corpus(
        f"{corpus.name}/{split}",
        tuple(corpus.inputs[i] for i in rows),
        np.array([new[int(corpus.labels[i])] for i in rows], dtype=np.int64),
        tuple(corpus.label_names[c] for c in keep),
        np.unique(group_ids, return_inverse=True)[1].astype(np.int64),
    )


@dataclass(frozen=True)
class TableSource(UserSource):
    """Text classification from CSV, TSV, JSON Lines, Parquet, a saved `datasets` folder or a Hub id."""

    test_path: str = ""
    text_column: str = "text"
    label_column: str = "label"
    group_column: str = ""
    hub_split: str = "train"
    allow_download: bool = False
    val_classes: int = 0
    test_classes: int = 0

    def __post_init__(self) -> None:
        if self.test_path and self.test_classes:
            raise DataError(f"data.sources.{self.name}: set test_path or test_classes, not both")

    def held_out(self) -> bool:
        return bool(self.val_classes or self.test_classes)

    def splits(self) -> dict[str, str | None]:
        return {**super().splits(), **({"test": ""} if self.test_path else {})}  # test file: support from NAME

    def _table(self, path: str) -> Corpus:
        location = path if self.format == "hub" else self.location(path)
        table = read_table(
            location, self.format, source=self.name, hub_split=self.hub_split, allow_download=self.allow_download
        )
        return table_corpus(
            self.name,
            table,
            text_column=self.text_column,
            label_column=self.label_column,
            group_column=self.group_column,
            source=self.name,
        )

    def load(self, split: str) -> Corpus:
        if not split:
            return self._table(self.path)
        whole = load_source(self, "")
        if self.test_path and split == "test":
            test = self._table(self.test_path)
            known = {n: i for i, n in enumerate(whole.label_names)}
            rows = [i for i, y in enumerate(test.labels) if test.label_names[y] in known]
            labels = np.array([known[test.label_names[test.labels[i]]] for i in rows], dtype=np.int64)
            inputs = tuple(test.inputs[i] for i in rows)
            return Corpus(f"{self.name}/test", inputs, labels, whole.label_names, whole.class_groups)
        return class_split(whole, split, (self.val_classes, self.test_classes), self.split_seed)


@dataclass(frozen=True)
class QASource(UserSource):
    """Question answering from SQuAD v1.1 JSON or JSON Lines rows (context, question,
    answers; articles by `title_column`), held-out parts article-disjoint."""

    title_column: str = "title"
    val_articles: int = 0
    test_articles: int = 0
    KIND: ClassVar[str] = "qa"

    def held_out(self) -> bool:
        return bool(self.val_articles or self.test_articles)

    def load(self, split: str) -> tuple[Article, ...]:
        articles = read_qa(self.location(), source=self.name, title_column=self.title_column)
        if not split:
            return tuple(articles)
        parts = split_articles(articles, self.val_articles, self.test_articles, self.split_seed)
        return tuple(parts[HELD_OUT.index(split)])


@dataclass(frozen=True)
class ImageSource(UserSource):
    """Images from a folder or zip of CLASS/IMAGE or GROUP/CLASS/IMAGE, any format Pillow
    reads; classes held out by group name (`*_groups`, e.g. alphabets) or by a seeded draw."""

    bad_images: str = "refuse"  # refuse | skip: an image that cannot be decoded
    val_groups: tuple[str, ...] = ()
    test_groups: tuple[str, ...] = ()
    val_classes: int = 0
    test_classes: int = 0
    KIND: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        if self.bad_images not in BAD_IMAGES:
            raise DataError(f"data.sources.{self.name}.bad_images must be one of {BAD_IMAGES}")
        if (self.val_groups or self.test_groups) and (self.val_classes or self.test_classes):
            raise DataError(f"data.sources.{self.name}: hold out classes by *_groups or by *_classes, not both")

    def held_out(self) -> bool:
        return bool(self.val_groups or self.test_groups or self.val_classes or self.test_classes)

    def folder_images(self):
        return read_image_folder(self.location(), source=self.name, bad_images=self.bad_images)

    def pixels(self, keys) -> np.ndarray:
        """(N, 105, 105) uint8 for image keys."""
        images = _folder(self).pixels
        try:
            return np.stack([images[key] for key in keys])
        except KeyError as err:
            raise DataError(f"no image {err.args[0]!r} in {self.location()}") from err

    def load(self, split: str) -> Corpus:
        folder = _folder(self)
        classes = sorted(set(folder.classes))
        group_names = sorted(set(folder.groups))
        index = {c: i for i, c in enumerate(classes)}
        group_of = dict(zip(folder.classes, folder.groups, strict=True))
        whole = Corpus(
            self.name,
            tuple(f"{self.name}/{k}" for k in folder.keys),
            np.array([index[c] for c in folder.classes], dtype=np.int64),
            tuple(classes),
            np.array([group_names.index(group_of[c]) for c in classes], dtype=np.int64),
        )
        if not split:
            return whole
        groups = None
        if self.val_groups or self.test_groups:
            unknown = set(self.val_groups + self.test_groups) - set(group_names)
            if unknown:
                raise DataError(
                    f"data.sources.{self.name}: no group(s) {sorted(unknown)} in {self.location()}; "
                    f"valid: {group_names}"
                )
            groups = ([group_of[c] for c in classes], self.val_groups, self.test_groups)
        return class_split(whole, split, (self.val_classes, self.test_classes), self.split_seed, groups)


USER_FORMATS = {**{f: TableSource for f in TABLE_FORMATS}, "squad": QASource, "images": ImageSource}


@lru_cache(maxsize=8)
def _folder(source: ImageSource):
    return source.folder_images()
