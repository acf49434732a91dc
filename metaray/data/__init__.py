"""Data sources -> task families -> deterministic episodes from (seed, family, index)."""

from metaray.data.episodes import Episode, TaskSampler, TaskSpec, check_feasible, eligible_classes, sample_episode
from metaray.data.registry import BUILTIN, DataRegistry, Family
from metaray.data.sources import Corpus, DataError
from metaray.data.squad import Article, QAEpisode, QAItem, check_articles, sample_qa_episode

__all__ = [
    "BUILTIN",
    "Article",
    "Corpus",
    "DataError",
    "DataRegistry",
    "Episode",
    "Family",
    "QAEpisode",
    "QAItem",
    "TaskSampler",
    "TaskSpec",
    "check_articles",
    "check_feasible",
    "eligible_classes",
    "sample_episode",
    "sample_qa_episode",
]
