"""SQuAD-format question answering -> articles -> few-shot QA tasks.

A task is one article: its support set is K question-answer pairs, its query set the
article's other questions. XQuAD-en (`DATA_DIR/xquad/xquad.en.json`: 240 paragraphs of
the 48 Wikipedia articles of the SQuAD v1.1 dev set) is split into meta-train / meta-val
/ meta-test by a seeded shuffle of its articles, so no article is in two splits. The
SQuAD v1.1 dev set (`DATA_DIR/squad/dev-v1.1.json`, 2,067 paragraphs of the same 48
articles) is split by the same titles: `squad/val` and `squad/test` are XQuAD's held-out
articles with all their paragraphs, and `squad/train` every other article, so meta-training
on it never reads a paragraph of an XQuAD meta-val or meta-test article.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from metaray.data.episodes import TaskSpec
from metaray.data.sources import BuiltinSource, DataError

XQUAD_EN = "xquad/xquad.en.json"
SQUAD_DEV = "squad/dev-v1.1.json"
SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # the article split is fixed, so every run and every evaluation agree on it


@dataclass(frozen=True)
class QAItem:
    """One question on one context; `answer_start` locates `answers[0]` in the context."""

    id: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_start: int


@dataclass(frozen=True)
class Article:
    title: str
    items: tuple[QAItem, ...]


@dataclass(frozen=True)
class QAEpisode:
    """One article's task: K support questions and the query questions."""

    title: str
    support: tuple[QAItem, ...]
    query: tuple[QAItem, ...]


def load_squad(path: str | Path) -> list[Article]:
    """Every article of a SQuAD v1.1 JSON file. An answer that is not where its
    `answer_start` says, in its context, is refused naming the question id."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SQuAD file {path} not found (XQuAD-en is {XQUAD_EN} in the data directory)")
    try:
        data = json.loads(path.read_text())["data"]
    except (ValueError, KeyError) as err:
        raise DataError(f"{path} is not SQuAD v1.1 JSON ({err})") from err
    try:
        return [_article(article, path) for article in data]
    except (KeyError, IndexError, TypeError) as err:  # e.g. SQuAD v2's unanswerable questions
        raise DataError(f"{path} is not SQuAD v1.1 JSON: missing or empty {err}") from err


def _article(article: dict, path: Path) -> Article:
    items = []
    for paragraph in article["paragraphs"]:
        context = paragraph["context"]
        for qa in paragraph["qas"]:
            first = qa["answers"][0]
            start = first["answer_start"]
            if context[start : start + len(first["text"])] != first["text"]:
                where = f"{path}: question {qa['id']}"
                raise DataError(f"{where}: answer {first['text']!r} is not in its context at {start}")
            answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
            items.append(QAItem(qa["id"], context, qa["question"], answers, start))
    return Article(article["title"], tuple(items))


def split_articles(articles: list[Article], n_val: int, n_test: int, seed: int) -> tuple[list, list, list]:
    """(meta-train, meta-val, meta-test) articles: a seeded permutation, test first."""
    if n_val + n_test >= len(articles):
        raise DataError(f"{n_val} val + {n_test} test articles leave none of {len(articles)} to meta-train on")
    order = np.random.default_rng(seed).permutation(len(articles))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return [articles[i] for i in train], [articles[i] for i in val], [articles[i] for i in test]


def qa_episode(article: Article, k_shot: int, q_query: int, seed: int | list[int]) -> tuple[list[QAItem], list[QAItem]]:
    """(support, query): K questions of the article and up to Q others (0: all others),
    drawn by `seed`."""
    if k_shot >= len(article.items):
        raise DataError(f"article {article.title!r} has {len(article.items)} questions; k_shot={k_shot} leaves none")
    order = np.random.default_rng(seed).permutation(len(article.items))
    support = [article.items[i] for i in order[:k_shot]]
    rest = order[k_shot:] if not q_query else order[k_shot : k_shot + q_query]
    return support, [article.items[i] for i in rest]


@lru_cache(maxsize=4)
def _squad_file(path: str) -> tuple[Article, ...]:
    return tuple(load_squad(path))


@dataclass(frozen=True)
class XQuAD(BuiltinSource):
    """`xquad/train|val|test`: XQuAD-en's articles, `val_articles` and `test_articles`
    held out by a fixed seeded permutation."""

    val_articles: int = 6
    test_articles: int = 10
    KIND: ClassVar[str] = "qa"
    SPLITS: ClassVar[dict[str, str | None]] = dict.fromkeys(SPLITS)

    def __post_init__(self) -> None:
        if min(self.val_articles, self.test_articles) < 1:
            raise DataError(f"data.sources.{self.name}.val_articles and test_articles must be >= 1")

    def load(self, split: str) -> tuple[Article, ...]:
        articles = list(_squad_file(str(self.folder() / XQUAD_EN)))
        parts = split_articles(articles, self.val_articles, self.test_articles, SPLIT_SEED)
        return tuple(parts[SPLITS.index(split)])


@dataclass(frozen=True)
class SQuAD(BuiltinSource):
    """`squad/train|val|test`: the SQuAD v1.1 dev set split by the titles of XQuAD's
    splits (`heldout`, a source of type xquad, with its val/test counts)."""

    heldout: XQuAD = XQuAD()
    KIND: ClassVar[str] = "qa"
    SPLITS: ClassVar[dict[str, str | None]] = dict.fromkeys(SPLITS)

    def load(self, split: str) -> tuple[Article, ...]:
        articles = _squad_file(str(self.folder() / SQUAD_DEV))
        held = {s: {a.title for a in self.heldout.load(s)} for s in ("val", "test")}
        if split == "train":
            return tuple(a for a in articles if a.title not in held["val"] | held["test"])
        return tuple(a for a in articles if a.title in held[split])


def check_articles(articles: tuple[Article, ...], k_shot: int, family: str) -> None:
    """Refuse a K that leaves an article without query questions, before any work starts."""
    fewest = min(articles, key=lambda a: len(a.items))
    if k_shot >= len(fewest.items):
        raise DataError(
            f"{family}: article {fewest.title!r} has {len(fewest.items)} questions, so k_shot={k_shot} leaves "
            f"it no query; use k_shot < {len(fewest.items)}"
        )


def sample_qa_episode(spec: TaskSpec, articles: tuple[Article, ...]) -> QAEpisode:
    """Task `spec.index` is article `order[index mod n]` of a seeded order of the family's
    articles (so consecutive indices visit every article before any repeats), with K
    support and Q query questions drawn from (seed, family, index)."""
    family_seed = zlib.crc32(spec.family.encode())
    order = np.random.default_rng([spec.seed, family_seed]).permutation(len(articles))
    article = articles[order[spec.index % len(articles)]]
    support, query = qa_episode(article, spec.k_shot, spec.q_query, seed=[spec.seed, family_seed, spec.index])
    return QAEpisode(article.title, tuple(support), tuple(query))
