"""Real data sets -> task families -> deterministic episodes from (seed, index)."""

from metaray.data.episodes import Episode, TaskSampler, TaskSpec, check_feasible, sample_episode
from metaray.data.sources import FAMILIES, IMAGE_FAMILIES, Corpus, DataError, SourceConfig, load_corpus
from metaray.data.squad import (
    QA_FAMILIES,
    Article,
    QAEpisode,
    QAItem,
    check_articles,
    load_articles,
    sample_qa_episode,
)

__all__ = [
    "FAMILIES",
    "IMAGE_FAMILIES",
    "QA_FAMILIES",
    "Article",
    "QAEpisode",
    "QAItem",
    "check_articles",
    "load_articles",
    "sample_qa_episode",
    "Corpus",
    "DataError",
    "Episode",
    "SourceConfig",
    "TaskSampler",
    "TaskSpec",
    "check_feasible",
    "load_corpus",
    "sample_episode",
]
