"""Real data sets -> task families -> deterministic episodes from (seed, index)."""

from metaray.data.episodes import Episode, TaskSampler, TaskSpec, check_feasible, sample_episode
from metaray.data.sources import FAMILIES, Corpus, DataError, SourceConfig, load_corpus

__all__ = [
    "FAMILIES",
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
