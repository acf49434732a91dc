"""A sweep's description (`tune_configs/*.yaml`), checked before any trial starts.

base: configs/demo.yaml            # the experiment every trial starts from
overrides: [meta.rounds=12]        # fixed for every trial (dotted, as on the command line)
space:                             # dotted config paths -> distributions
  meta.inner.lr: {loguniform: [1.0e-3, 1.0e-1]}
  meta.outer_lr: {uniform: [0.1, 1.0]}
  meta.inner.steps: {int: [1, 8]}  # integers low..high, both included
  prompt.length: {choice: [4, 8, 16]}
metric: meta_val_score             # what the trainer reports at each meta-validation
mode: max
num_samples: 8
scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # or {type: none}
search: random                     # random | optuna (where installed)
max_concurrent_trials: 0           # 0: as many as the cluster's resources fit
output: runs/tune/intent           # trials, CSV, plot, best config (path or URI)
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from metaray.config import ConfigError, ExperimentConfig, _number, _suggest, build, load_config
from metaray.distributed.driver import LEGACY_METRICS, REPORTED_METRICS
from metaray.kinds import kind_of

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
SEARCHES = ("random", "optuna")


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = "asha"  # asha | none
    grace_period: int = 0  # rounds before a trial may be stopped (0: meta.eval_every)
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class SweepSpec:
    base: str
    space: dict[str, dict] = field(default_factory=dict)  # dotted path -> {kind: args}
    overrides: tuple[str, ...] = ()
    metric: str = "meta_val_score"
    mode: str = "max"
    num_samples: int = 8
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    search: str = "random"
    max_concurrent_trials: int = 0
    output: str = "runs/tune/default"
    seed: int = 0


def distribution(path: str, entry: Any) -> tuple[Any, list]:
    """(the Tune domain, the values to check it with: every choice, or both ends of a
    range) for one `space` entry; refused by name if it is not valid."""
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f"space.{path}: give one distribution, e.g. {{loguniform: [1e-3, 1e-1]}}; got {entry!r}")
    ((kind, args),) = entry.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"space.{path}: unknown distribution {kind!r}{_suggest(kind, DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"space.{path}: choice needs a non-empty list of values, got {args!r}")
        return tune.choice(args), list(args)
    values = [_number(a) for a in args] if isinstance(args, list) else None
    if not values or len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
        raise ConfigError(f"space.{path}: {kind} needs [low, high], got {args!r}")
    low, high = values
    if not low < high or (kind == "loguniform" and low <= 0) or (kind == "int" and low != int(low)):
        raise ConfigError(f"space.{path}: {kind} [{low}, {high}] is empty or invalid (needs 0 < low < high for log)")
    if kind == "int":
        return tune.randint(int(low), int(high) + 1), [int(low), int(high)]
    return (tune.loguniform(low, high) if kind == "loguniform" else tune.uniform(low, high)), [low, high]


def trial_config(spec: SweepSpec, params: dict[str, Any], extra: tuple[str, ...] = ()) -> ExperimentConfig:
    """The experiment a trial runs: base + fixed overrides + its sampled values."""
    sampled = [
        f"{path}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for path, value in params.items()
    ]
    return load_config(spec.base, [*spec.overrides, *extra, *sampled])


def check_sweep(spec: SweepSpec, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything that can be wrong before a trial starts; returns the Tune search space."""
    if not spec.space:
        raise ConfigError("space is empty: give at least one dotted config path and its distribution")
    space = {}
    for path, entry in spec.space.items():  # each path must be a config field that takes its values
        space[path], probes = distribution(path, entry)
        for value in probes:
            try:
                kind_of(trial_config(spec, {path: value}, extra))
            except ConfigError as err:
                raise ConfigError(f"space.{path} = {value!r}: {err}") from err
    cfg = trial_config(spec, {}, extra)
    kind_of(cfg)
    if spec.metric not in REPORTED_METRICS:
        raise ConfigError(f"metric {spec.metric!r} is never reported{_suggest(spec.metric, REPORTED_METRICS)}")
    if spec.metric == "meta_val_score" and not cfg.meta.eval_every:
        raise ConfigError("metric meta_val_score needs meta.eval_every > 0 (it is reported at each meta-validation)")
    if spec.mode not in ("max", "min"):
        raise ConfigError(f"mode must be max or min, got {spec.mode!r}")
    if spec.num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {spec.num_samples}")
    if spec.scheduler.type not in ("asha", "none"):
        raise ConfigError(f"scheduler.type must be asha or none, got {spec.scheduler.type!r}")
    if spec.search not in SEARCHES:
        raise ConfigError(f"search must be one of {SEARCHES}, got {spec.search!r}")
    if spec.search == "optuna" and importlib.util.find_spec("optuna") is None:
        raise ConfigError("search: optuna is not installed (`pip install optuna`), or use search: random")
    return space


def load_sweep(path: str | Path, output: str | None = None, num_samples: int | None = None) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} not found")
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, dict) or "base" not in tree:
        raise ConfigError(f"sweep file {path} must be a mapping with at least `base:` and `space:`")
    if output:
        tree["output"] = output
    if num_samples:
        tree["num_samples"] = num_samples
    tree["metric"] = LEGACY_METRICS.get(tree.get("metric"), tree.get("metric", "meta_val_score"))  # old sweep files
    space = tree.pop("space", None) or {}
    if not isinstance(space, dict):
        raise ConfigError(f"space must map dotted config paths to distributions, got {space!r}")
    return dataclasses.replace(build(SweepSpec, tree), space=space)
