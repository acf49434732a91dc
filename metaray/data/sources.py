"""Real intent-classification data sets -> labelled corpora.

Files are read with Hugging Face `datasets` from a data directory laid out as in
`shared/data` (clinc150/, banking77/, snips/). A corpus is one family of classes:
CLINC150's domains are split into meta-train / meta-val / meta-test families so
that no class is in two splits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import datasets
import numpy as np

FAMILIES = ("clinc150/train", "clinc150/val", "clinc150/test", "snips", "banking77", "banking77/train")
IMAGE_FAMILIES = ("omniglot/train", "omniglot/val", "omniglot/test")  # kind: image


class DataError(ValueError):
    """Missing or unusable data; the message names the path or setting to change."""


@dataclass(frozen=True)
class Corpus:
    """Texts with integer labels in [0, len(label_names)); `class_groups[c]` is the
    domain of class c (CLINC150's domains; one group elsewhere)."""

    name: str
    texts: tuple[str, ...]
    labels: np.ndarray  # (N,) int64
    label_names: tuple[str, ...]
    class_groups: np.ndarray  # (C,) int64

    def indices_by_class(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.labels == c) for c in range(len(self.label_names))]


@dataclass(frozen=True)
class SourceConfig:
    """Where the files are and how CLINC150's domains are split."""

    data_dir: str
    clinc150_val_domains: tuple[str, ...]
    clinc150_test_domains: tuple[str, ...]
    xquad_val_articles: int = 6  # XQuAD-en articles held out for meta-validation
    xquad_test_articles: int = 10  # and for meta-test
    omniglot_val_alphabets: tuple[str, ...] = ("Early_Aramaic",)
    omniglot_test_alphabets: tuple[str, ...] = ("Korean", "Sanskrit", "Tagalog")
    omniglot_rotations: bool = False  # omniglot/train: each character turned 90, 180, 270 degrees is a new class


def readable_label(name: str) -> str:
    """`card_arrival` -> `card arrival`; `PlayMusic` -> `play music`."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ")
    return spaced.lower()


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError(
            f"{path} not found; set data.data_dir (or METARAY_DATA_DIR) to a folder holding "
            "clinc150/, banking77/ and snips/ as in shared/data"
        )
    return path


def _corpus(name: str, table: datasets.Dataset, label_order: list[str] | None = None, groups=None) -> Corpus:
    names = label_order or sorted(set(table["label"]))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[n] for n in table["label"]], dtype=np.int64)
    class_groups = np.zeros(len(names), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    return Corpus(name, tuple(table["text"]), labels, tuple(readable_label(n) for n in names), class_groups)


def _clinc150(src: SourceConfig, split: str) -> Corpus:
    root = Path(src.data_dir) / "clinc150"
    full = json.loads(_require(root / "data_full.json").read_text())
    domains: dict[str, list[str]] = json.loads(_require(root / "domains.json").read_text())
    unknown = set(src.clinc150_val_domains + src.clinc150_test_domains) - set(domains)
    if unknown:
        raise DataError(
            f"unknown CLINC150 domain(s) {sorted(unknown)} in data.clinc150_*_domains; valid: {sorted(domains)}"
        )
    held_out = {"val": src.clinc150_val_domains, "test": src.clinc150_test_domains}
    if split == "train":
        chosen = [d for d in domains if d not in held_out["val"] + held_out["test"]]
    else:
        chosen = list(held_out[split])
    intents = sorted(i for d in chosen for i in domains[d])
    domain_of = {i: chosen.index(d) for d in chosen for i in domains[d]}
    keep = set(intents)
    rows = [(t, i) for part in ("train", "val", "test") for t, i in full[part] if i in keep]
    table = datasets.Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows]})
    return _corpus(f"clinc150/{split}", table, intents, [domain_of[i] for i in intents])


def _snips(src: SourceConfig) -> Corpus:
    root = Path(src.data_dir) / "snips"
    texts, labels = [], []
    for path in sorted(_require(root).glob("train_*_full.json")):
        # train_PlayMusic_full.json is latin-1, the rest UTF-8 (shared/data/README.md).
        raw = path.read_bytes()
        try:
            content = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            content = json.loads(raw.decode("latin-1"))
        for intent, items in content.items():
            for item in items:
                texts.append("".join(chunk["text"] for chunk in item["data"]).strip())
                labels.append(intent)
    if not texts:
        raise DataError(f"no train_*_full.json files in {root}")
    return _corpus("snips", datasets.Dataset.from_dict({"text": texts, "label": labels}))


def _banking77(src: SourceConfig, split: str) -> Corpus:
    root = Path(src.data_dir) / "banking77"
    order = json.loads(_require(root / "categories.json").read_text())
    table = datasets.Dataset.from_csv(str(_require(root / f"{split}.csv")), keep_in_memory=True)
    table = table.rename_column("category", "label")
    name = "banking77" if split == "test" else f"banking77/{split}"
    return _corpus(name, table, order)


@lru_cache(maxsize=16)
def load_corpus(name: str, src: SourceConfig) -> Corpus:
    """One task family by name (see FAMILIES); cached per process."""
    datasets.disable_progress_bars()
    if name.startswith("clinc150/") and name.split("/", 1)[1] in ("train", "val", "test"):
        return _clinc150(src, name.split("/", 1)[1])
    if name == "snips":
        return _snips(src)
    if name == "banking77":
        return _banking77(src, "test")
    if name == "banking77/train":
        return _banking77(src, "train")
    if name in IMAGE_FAMILIES:
        from metaray.data.omniglot import omniglot_corpus  # imports this module

        return omniglot_corpus(src, name.split("/", 1)[1])
    raise DataError(f"unknown task family {name!r}; valid: {', '.join(FAMILIES)}")
