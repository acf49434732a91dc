"""The data registry: family names -> sources -> corpora, articles and pixels.

A source is a frozen record of one data set's options: a built-in set (`BUILTIN`,
e.g. `clinc150: {val_domains: [work]}`) or a user's own files (`format: csv|tsv|jsonl|
parquet|datasets|hub|squad|images`, see `metaray.data.user`), configured under
`data.sources.NAME`. A family is `NAME` or `NAME/SPLIT`, one of the splits its source
offers; it has the source's task kind and, for the full-label protocol, the family its
support set is drawn from (BANKING77's test file draws from its train file).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaray.config import DATA_DIR_ENV, ConfigError, DataConfig, build
from metaray.data.omniglot import Omniglot
from metaray.data.sources import Banking77, Clinc150, Corpus, DataError, Hint3, Snips, Trec, load_source
from metaray.data.squad import SQuAD, XQuAD
from metaray.data.user import USER_FORMATS

BUILTIN = {
    "clinc150": Clinc150,
    "banking77": Banking77,
    "snips": Snips,
    "hint3": Hint3,
    "trec": Trec,
    "xquad": XQuAD,
    "squad": SQuAD,
    "omniglot": Omniglot,
}


@dataclass(frozen=True)
class Family:
    """One task family: `kind` (classify | qa | image) is what its tasks are; `support`
    names the family the full-label protocol draws support examples from ("": itself)."""

    name: str
    kind: str
    source: str
    split: str
    support: str = ""


def _make_source(name: str, options: dict[str, Any], root: str, heldout=None):
    where = f"data.sources.{name}."
    if "/" in name or not name:
        raise ConfigError(f"data.sources: a source name must be non-empty without '/', got {name!r}")
    reserved = {"name", "root", "heldout"} & set(options)
    if reserved:
        raise ConfigError(f"{where}{sorted(reserved)[0]} is set by metaray, not by a config")
    options = dict(options)
    fmt = options.get("format")
    if fmt is None and name not in BUILTIN:
        raise ConfigError(
            f"data.sources.{name}: not a built-in data set ({', '.join(BUILTIN)}); give it a format: "
            f"{' | '.join(USER_FORMATS)} and a path"
        )
    if fmt is not None and fmt not in USER_FORMATS:
        raise ConfigError(f"{where}format must be one of {' | '.join(USER_FORMATS)}, got {fmt!r}")
    cls = USER_FORMATS[fmt] if fmt is not None else BUILTIN[name]
    try:
        record = build(cls, options, where)
    except DataError as err:
        raise ConfigError(str(err)) from err
    extra = {"heldout": heldout} if cls is SQuAD else {}
    return dataclasses.replace(record, name=name, root=root, **extra)


class DataRegistry:
    """Every source of a config (the built-in sets with their options, and the user's), and
    the families they offer. Loading is lazy and cached per process."""

    def __init__(self, data_dir: str = "", sources: dict[str, dict[str, Any]] | None = None) -> None:
        sources = sources or {}
        self.data_dir = data_dir
        xquad = _make_source("xquad", sources.get("xquad", {}), data_dir)  # squad/* leaves out its held-out articles
        configured = dict.fromkeys(BUILTIN, {}) | sources  # the built-ins first, in their order
        self.sources = {name: _make_source(name, opts, data_dir, xquad) for name, opts in configured.items()}
        self._families = {f.name: f for f in self._list()}

    @classmethod
    def from_config(cls, data: DataConfig) -> DataRegistry:
        """The registry of `data.sources`, its files under `data.data_dir` (or $METARAY_DATA_DIR)."""
        wanted = data.data_dir or os.environ.get(DATA_DIR_ENV, "")
        return cls(str(data.resolved_dir()) if wanted else "", data.sources)

    def families(self) -> list[Family]:
        """Every family of every source, in source order."""
        return list(self._families.values())

    def _list(self) -> list[Family]:
        out = []
        for name, source in self.sources.items():
            for split, support in source.splits().items():
                family = f"{name}/{split}" if split else name
                back = None if support is None else (f"{name}/{support}" if support else name)
                out.append(Family(family, source.KIND, name, split, back or ""))
        return out

    def family(self, name: str) -> Family:
        found = self._families
        if name not in found:
            close = difflib.get_close_matches(name, list(found), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise DataError(f"unknown task family {name!r}{hint} (valid: {', '.join(found)})")
        return found[name]

    def load(self, name: str):
        """The family's Corpus (classify, image) or its articles (qa)."""
        family = self.family(name)
        return load_source(self.sources[family.source], family.split)

    def corpus(self, name: str) -> Corpus:
        loaded = self.load(name)
        if not isinstance(loaded, Corpus):
            raise DataError(f"{name!r} is a question-answering family: it has articles, not classes")
        return loaded

    def pixels(self, ids) -> np.ndarray:
        """(N, 105, 105) uint8 for image ids `SOURCE/KEY` (of any image sources, in order)."""
        out = []
        for image_id in ids:
            source, _, key = str(image_id).partition("/")
            record = self.sources.get(source)
            if record is None or not hasattr(record, "pixels"):
                raise DataError(f"image id {image_id!r} names no image source")
            out.append(record.pixels([key])[0])
        return np.stack(out)
