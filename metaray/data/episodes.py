"""Deterministic N-way K-shot episodes from (seed, family, index).

A `TaskSpec` is a few integers and a family name: it is what travels to an actor,
never the data. The actor rebuilds the same `Episode` from its own copy of the corpus.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

from metaray.data.sources import Corpus, DataError


@dataclass(frozen=True)
class TaskSpec:
    """One task. n_way=0: every class of the family (full-label protocol); q_query=0:
    every remaining example of each chosen class. `same_group`: all N classes from
    one domain of the family (harder, BANKING77-like tasks). With `support_family`
    set, the support set is drawn from that corpus (e.g. BANKING77's train file) and
    the query set from `family` (its test file)."""

    family: str
    index: int
    n_way: int
    k_shot: int
    q_query: int
    seed: int = 0
    support_family: str = ""
    same_group: bool = False  # draw every class from one domain (fine-grained tasks)
    unlabeled: int = 0  # inputs beside the episode, labels withheld (a distillation teacher labels them)


@dataclass(frozen=True)
class Episode:
    """Support and query sets with labels in [0, n_classes)."""

    support_inputs: tuple[str, ...]
    support_labels: np.ndarray
    query_inputs: tuple[str, ...]
    query_labels: np.ndarray
    label_names: tuple[str, ...]
    unlabeled_inputs: tuple[str, ...] = ()  # the task's inputs without labels (`TaskSpec.unlabeled`)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)


def episode_rng(spec: TaskSpec) -> np.random.Generator:
    """Independent of process, platform and Python hash seed."""
    return np.random.default_rng([spec.seed, zlib.crc32(spec.family.encode()), spec.index])


def eligible_classes(corpus: Corpus, needed_per_class: int) -> int:
    """How many classes of the corpus have at least `needed_per_class` examples."""
    return int((np.bincount(corpus.labels, minlength=len(corpus.label_names)) >= needed_per_class).sum())


def check_feasible(corpus: Corpus, n_way: int, needed_per_class: int, same_group: bool = False) -> None:
    """Refuse an episode shape the corpus cannot supply, before any work starts."""
    counts = np.bincount(corpus.labels, minlength=len(corpus.label_names))
    if n_way > len(counts):
        raise DataError(f"n_way={n_way} but {corpus.name} has only {len(counts)} classes")
    ok = counts >= needed_per_class
    eligible = int(ok.sum())
    if eligible < max(n_way, 1):
        raise DataError(
            f"k_shot + q_query = {needed_per_class} examples per class, but only {eligible} classes of "
            f"{corpus.name} have that many (fewest: {counts.min()}); lower data.k_shot or data.q_query"
        )
    largest_group = int(np.bincount(corpus.class_groups[ok]).max())
    if same_group and largest_group < n_way:
        raise DataError(
            f"data.same_domain: no domain of {corpus.name} has n_way={n_way} classes "
            f"(largest: {largest_group}); lower data.n_way"
        )


def sample_episode(spec: TaskSpec, corpus: Corpus, support_corpus: Corpus | None = None) -> Episode:
    """The episode `spec` names; identical for identical (spec, corpus)."""
    rng = episode_rng(spec)
    by_class = corpus.indices_by_class()
    if support_corpus is not None:
        return _split_episode(spec, rng, by_class, corpus, support_corpus)
    needed = spec.k_shot + spec.q_query
    eligible = [c for c, idx in enumerate(by_class) if len(idx) >= needed]
    n_way = spec.n_way or len(eligible)
    if n_way > len(eligible):
        raise DataError(
            f"{spec.family}: {n_way}-way with {needed} examples per class, only {len(eligible)} classes qualify"
        )
    if spec.same_group:
        groups = [g for g in np.unique(corpus.class_groups) if (corpus.class_groups[eligible] == g).sum() >= n_way]
        if not groups:
            raise DataError(f"{spec.family}: no domain has {n_way} classes with {needed} examples each")
        group = groups[int(rng.integers(len(groups)))]
        eligible = [c for c in eligible if corpus.class_groups[c] == group]
    classes = sorted(rng.choice(eligible, size=n_way, replace=False).tolist())
    support, query = [], []
    for new_label, c in enumerate(classes):
        chosen = rng.choice(by_class[c], size=needed, replace=False)
        support += [(i, new_label) for i in chosen[: spec.k_shot]]
        query += [(i, new_label) for i in chosen[spec.k_shot :]]
    episode = _episode(corpus, corpus, support, query, classes)
    return _with_unlabeled(episode, spec, rng, corpus, np.concatenate([by_class[c] for c in classes]), support + query)


def _split_episode(spec, rng, by_class, corpus: Corpus, support_corpus: Corpus) -> Episode:
    if support_corpus.label_names != corpus.label_names:
        raise DataError(f"{support_corpus.name} and {corpus.name} disagree on their label set")
    support_by_class = support_corpus.indices_by_class()
    support, query = [], []
    for c in range(len(corpus.label_names)):
        if len(support_by_class[c]) < spec.k_shot:
            raise DataError(
                f"{support_corpus.name}: class {corpus.label_names[c]!r} has fewer than {spec.k_shot} examples"
            )
        support += [(i, c) for i in rng.choice(support_by_class[c], size=spec.k_shot, replace=False)]
        pool = by_class[c]
        if spec.q_query:
            pool = rng.choice(pool, size=min(spec.q_query, len(pool)), replace=False)
        query += [(i, c) for i in sorted(pool)]
    episode = _episode(support_corpus, corpus, support, query, list(range(len(corpus.label_names))))
    return _with_unlabeled(episode, spec, rng, support_corpus, np.arange(len(support_corpus.inputs)), support)


def _with_unlabeled(episode: Episode, spec: TaskSpec, rng, corpus: Corpus, pool: np.ndarray, used) -> Episode:
    """`spec.unlabeled` inputs of `pool` (indices into `corpus`) that the episode does not
    use, drawn after everything else, so an episode's support and query sets do not depend
    on it; fewer where the pool has fewer."""
    if not spec.unlabeled:
        return episode
    free = np.setdiff1d(pool, [i for i, _ in used])
    chosen = np.sort(rng.choice(free, size=min(spec.unlabeled, len(free)), replace=False))
    return dataclasses.replace(episode, unlabeled_inputs=tuple(corpus.inputs[i] for i in chosen))


def _episode(support_corpus: Corpus, query_corpus: Corpus, support, query, classes) -> Episode:
    return Episode(
        support_inputs=tuple(support_corpus.inputs[i] for i, _ in support),
        support_labels=np.array([lab for _, lab in support], dtype=np.int64),
        query_inputs=tuple(query_corpus.inputs[i] for i, _ in query),
        query_labels=np.array([lab for _, lab in query], dtype=np.int64),
        label_names=tuple(query_corpus.label_names[c] for c in classes),
    )


@dataclass(frozen=True)
class TaskSampler:
    """Meta-training tasks: task t of the run is `spec(t)`, a pure function of t, so a
    resumed run continues the same sequence. A family is chosen per task with
    probability proportional to its number of classes. With `ways`, each task's number
    of classes is drawn from them and capped at its family's class count (a mixture of
    task shapes: a 48-way task of CLINC150 beside a 7-way one of SNIPS)."""

    families: tuple[str, ...]
    class_counts: tuple[int, ...]
    n_way: int
    k_shot: int
    q_query: int
    seed: int
    same_group: bool = False
    ways: tuple[int, ...] = ()

    def spec(self, task_index: int) -> TaskSpec:
        rng = np.random.default_rng([self.seed, 0x7A5C, task_index])
        weights = np.array(self.class_counts, dtype=float)
        chosen = int(rng.choice(len(self.families), p=weights / weights.sum()))
        n_way = self.n_way
        if self.ways:
            n_way = min(self.ways[int(rng.integers(len(self.ways)))], self.class_counts[chosen])
        return TaskSpec(
            self.families[chosen], task_index, n_way, self.k_shot, self.q_query, self.seed, same_group=self.same_group
        )
