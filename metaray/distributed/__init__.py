"""Ray: task-adapter actors, the aggregator actor and the meta-training driver."""

from metaray.distributed.adapter import EvalResult, TaskAdapter, TaskResult
from metaray.distributed.aggregator import MetaAggregator
from metaray.distributed.driver import REPORTED_METRICS, meta_validate, preflight, train
from metaray.distributed.runners import LocalRunner, RayRunner, make_runner
from metaray.runtime import connect

__all__ = [
    "REPORTED_METRICS",
    "EvalResult",
    "LocalRunner",
    "MetaAggregator",
    "RayRunner",
    "TaskAdapter",
    "TaskResult",
    "connect",
    "make_runner",
    "meta_validate",
    "preflight",
    "train",
]
