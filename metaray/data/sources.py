"""Labelled corpora, and the built-in intent and question-type data sets.

Files are read from a data directory laid out as `shared/data` (clinc150/, banking77/,
snips/, hint3/, trec/). A corpus is one family of classes; where a data set is split
into meta-train / meta-val / meta-test families, no class is in two of them. Each
built-in set is a frozen record of its options (`data.sources.NAME` in a config); the
registry (`metaray.data.registry`) turns family names into corpora through it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from metaray.errors import MetarayError


class DataError(MetarayError, ValueError):
    """Missing or unusable data; the message names the path or setting to change."""


@dataclass(frozen=True)
class Corpus:
    """Inputs (texts, or image ids) with integer labels in [0, len(label_names));
    `class_groups[c]` is the group of class c (a domain, an alphabet; one group elsewhere)."""

    name: str
    inputs: tuple[str, ...]
    labels: np.ndarray  # (N,) int64
    label_names: tuple[str, ...]
    class_groups: np.ndarray  # (C,) int64

    def indices_by_class(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.labels == c) for c in range(len(self.label_names))]


def readable_label(name: str) -> str:
    """`card_arrival` -> `card arrival`; `PlayMusic` -> `play music`."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ")
    return spaced.lower()


def make_corpus(name: str, rows: list[tuple[str, str]], label_order=None, group_of=None) -> Corpus:
    """(text, raw label) rows -> a Corpus; classes in `label_order` (default: sorted),
    `group_of[label]` the group index of each class (default: one group)."""
    names = list(label_order or sorted({label for _, label in rows}))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[label] for _, label in rows], dtype=np.int64)
    groups = np.array([group_of[n] if group_of else 0 for n in names], dtype=np.int64)
    return Corpus(name, tuple(t for t, _ in rows), labels, tuple(readable_label(n) for n in names), groups)


def require(path: Path) -> Path:
    if not path.exists():
        raise DataError(
            f"{path} not found; set data.data_dir (or METARAY_DATA_DIR) to a folder holding the data sets "
            "as in shared/data (clinc150/, banking77/, snips/, hint3/, trec/, xquad/, squad/, omniglot/)"
        )
    return path


def _decoded(path: Path) -> str:
    """UTF-8, else latin-1 (SNIPS' PlayMusic and TREC's training file; shared/data/README.md)."""
    raw = require(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def held_out_split(names: list[str], held_out: dict[str, tuple[str, ...]], split: str, setting: str) -> list[str]:
    """The names (domains, alphabets) of `split`: those named for val or test in
    `held_out`, all the others for train; a name that is not in `names` is refused."""
    unknown = set(held_out["val"] + held_out["test"]) - set(names)
    if unknown:
        raise DataError(f"unknown name(s) {sorted(unknown)} in {setting}; valid: {sorted(names)}")
    if split == "train":
        return [n for n in names if n not in held_out["val"] + held_out["test"]]
    return list(held_out[split])


@dataclass(frozen=True)
class BuiltinSource:
    """A built-in data set under `root`: `SPLITS` maps each family suffix ("" is the bare
    name) to the suffix its full-protocol support set comes from (None: none)."""

    name: str = ""
    root: str = ""
    KIND: ClassVar[str] = "classify"
    SPLITS: ClassVar[dict[str, str | None]] = {"": None}

    def splits(self) -> dict[str, str | None]:
        return dict(self.SPLITS)

    def folder(self) -> Path:
        if not self.root:
            raise DataError(f"{self.name} is a built-in data set: set data.data_dir (or METARAY_DATA_DIR)")
        return Path(self.root)


@dataclass(frozen=True)
class Clinc150(BuiltinSource):
    """CLINC150 (Larson et al. 2019): 150 intents in 10 domains, split by domain."""

    val_domains: tuple[str, ...] = ("work",)
    test_domains: tuple[str, ...] = ("travel", "kitchen_and_dining")
    SPLITS: ClassVar[dict[str, str | None]] = dict.fromkeys(("train", "val", "test"))

    def load(self, split: str) -> Corpus:
        root = self.folder() / "clinc150"
        full = json.loads(require(root / "data_full.json").read_text())
        domains: dict[str, list[str]] = json.loads(require(root / "domains.json").read_text())
        held_out = {"val": self.val_domains, "test": self.test_domains}
        chosen = held_out_split(list(domains), held_out, split, f"data.sources.{self.name}.*_domains (CLINC150)")
        intents = sorted(i for d in chosen for i in domains[d])
        domain_of = {i: chosen.index(d) for d in chosen for i in domains[d]}
        rows = [(t, i) for part in ("train", "val", "test") for t, i in full[part] if i in domain_of]
        return make_corpus(f"{self.name}/{split}", rows, intents, domain_of)


@dataclass(frozen=True)
class Snips(BuiltinSource):
    """SNIPS custom intents: 7 intents, every training utterance."""

    def load(self, split: str) -> Corpus:
        root = self.folder() / "snips"
        rows = []
        for path in sorted(require(root).glob("train_*_full.json")):
            for intent, items in json.loads(_decoded(path)).items():
                rows += [("".join(chunk["text"] for chunk in item["data"]).strip(), intent) for item in items]
        if not rows:
            raise DataError(f"no train_*_full.json files in {root}")
        return make_corpus(self.name, rows)


@dataclass(frozen=True)
class Banking77(BuiltinSource):
    """BANKING77 (Casanueva et al. 2020): `banking77` is the test file, whose full-protocol
    support comes from `banking77/train`. Never for meta-training or selection."""

    SPLITS: ClassVar[dict[str, str | None]] = {"": "train", "train": None}

    def load(self, split: str) -> Corpus:
        root = self.folder() / "banking77"
        order = json.loads(require(root / "categories.json").read_text())
        reader = csv.DictReader(io.StringIO(_decoded(root / f"{split or 'test'}.csv")))
        rows = [(r["text"], r["category"]) for r in reader]
        return make_corpus(f"{self.name}/{split}" if split else self.name, rows, order)


HINT3_BOTS = ("sofmattress", "curekart", "powerplay11")


@dataclass(frozen=True)
class Hint3(BuiltinSource):
    """HINT3 v2 (Arora et al. 2020), three deployed bots. `hint3/BOT`: every labelled
    utterance of the bot (train and test files); `hint3/BOT/test`: the test file, its
    support from `hint3/BOT/train` (the full-label protocol). The out-of-scope label is
    left out: it is not an intent."""

    out_of_scope: str = "NO_NODES_DETECTED"
    SPLITS: ClassVar[dict[str, str | None]] = {
        **dict.fromkeys(HINT3_BOTS),
        **dict.fromkeys(f"{bot}/train" for bot in HINT3_BOTS),
        **{f"{bot}/test": f"{bot}/train" for bot in HINT3_BOTS},
    }

    def _rows(self, bot: str, part: str) -> list[tuple[str, str]]:
        reader = csv.DictReader(io.StringIO(_decoded(self.folder() / "hint3" / f"{bot}_{part}.csv")))
        return [(r["sentence"], r["label"]) for r in reader if r["label"] != self.out_of_scope and r["sentence"]]

    def load(self, split: str) -> Corpus:
        bot, _, part = split.partition("/")
        train = self._rows(bot, "train")
        if part == "train":
            return make_corpus(f"{self.name}/{split}", train)
        order = sorted({label for _, label in train})  # the test file's classes as the train file's
        if part == "test":
            known = set(order)
            return make_corpus(f"{self.name}/{split}", [r for r in self._rows(bot, "test") if r[1] in known], order)
        return make_corpus(f"{self.name}/{split}", train + self._rows(bot, "test"))


@dataclass(frozen=True)
class Trec(BuiltinSource):
    """TREC question classification (Li and Roth 2002): 50 fine labels in 6 coarse groups.
    `trec`: both files; `trec/train`, and `trec/test` with its support from `trec/train`."""

    SPLITS: ClassVar[dict[str, str | None]] = {"": None, "train": None, "test": "train"}
    FILES: ClassVar[dict[str, str]] = {"train": "train_5500.label", "test": "TREC_10.label"}

    def _rows(self, part: str) -> list[tuple[str, str]]:
        lines = _decoded(self.folder() / "trec" / self.FILES[part]).splitlines()
        return [(text.strip(), label) for label, _, text in (ln.partition(" ") for ln in lines) if text.strip()]

    def load(self, split: str) -> Corpus:
        rows = self._rows(split) if split else self._rows("train") + self._rows("test")
        train = self._rows("train")
        order = sorted({label for _, label in train})
        rows = [r for r in rows if r[1] in set(order)]  # a test label never seen in training has no support
        coarse = sorted({label.split(":")[0] for label in order})
        group_of = {label: coarse.index(label.split(":")[0]) for label in order}
        return make_corpus(f"{self.name}/{split}" if split else self.name, rows, order, group_of)


@lru_cache(maxsize=32)
def load_source(source, split: str):
    """`source.load(split)` (a Corpus, or articles), cached per process: sources are frozen,
    hashable records of their options."""
    return source.load(split)
