"""`metaray tune`: a Ray Tune sweep whose trials are `metaray train` runs.

Each trial is the ordinary driver with the trial's sampled values as config
overrides; its actors are placed in the trial's own placement group (an empty
bundle for the trial's driver, one bundle per adapter actor), so trials never take
each other's resources. ASHA compares trials on the metric at equal rounds.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from tqdm.auto import tqdm

from metaray.config import ConfigError, ExperimentConfig
from metaray.distributed import connect, train
from metaray.storage import RunStore, is_uri
from metaray.tuning.space import SweepSpec, check_sweep, trial_config

SWEEP_DIR = "sweep"  # Tune's own state, under the sweep's output


def run_trial(config: dict, spec: SweepSpec, extra: tuple[str, ...]) -> None:
    """One trial: `metaray train` with the trial's values, reporting at each round that
    has the metric. Its checkpoints live under OUTPUT/trials/TRIAL_ID, so a restored
    sweep continues each unfinished trial from its last round."""
    trial_dir = f"{spec.output.rstrip('/')}/trials/{tune.get_context().get_trial_id()}"
    cfg = trial_config(spec, config["params"], (*extra, f"output.dir={trial_dir}"))

    def report(metrics: dict) -> None:
        if spec.metric in metrics:
            tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    train(cfg, progress=False, resume=RunStore(trial_dir).is_file("latest"), on_round=report)


def trial_resources(cfg: ExperimentConfig) -> tune.PlacementGroupFactory:
    r = cfg.ray
    if r.local:  # the trial adapts in its own process
        return tune.PlacementGroupFactory([{"CPU": r.cpus_per_actor}])
    actor = {"CPU": r.cpus_per_actor, **({"GPU": r.gpus_per_actor} if r.gpus_per_actor else {})}
    actor |= r.resources_per_actor  # the trial's adapters run in these bundles, spread as ray.placement says
    strategy = "SPREAD" if r.placement == "spread" else "PACK"
    return tune.PlacementGroupFactory([{}] + [actor] * r.num_actors, strategy=strategy)


def _scheduler(spec: SweepSpec, cfg: ExperimentConfig):
    if spec.scheduler.type == "none":
        return None
    return ASHAScheduler(
        time_attr="round",
        max_t=cfg.meta.rounds,
        grace_period=spec.scheduler.grace_period or cfg.meta.eval_every or 1,
        reduction_factor=spec.scheduler.reduction_factor,
    )


def _search(spec: SweepSpec):
    """The search algorithm, with the concurrency limit (Tune ignores `max_concurrent_trials`
    for a generator it did not make itself)."""
    if spec.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(seed=spec.seed)
        return ConcurrencyLimiter(searcher, spec.max_concurrent_trials) if spec.max_concurrent_trials else searcher
    return tune.search.BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent_trials)


@dataclass
class Sweep:
    grid: tune.ResultGrid
    spec: SweepSpec
    extra: tuple[str, ...]


def _absolute(spec: SweepSpec, extra: tuple[str, ...]) -> tuple[SweepSpec, tuple[str, ...]]:
    """Trials run in their own working folders: every relative path becomes absolute."""
    base = trial_config(spec, {}, extra)
    output = spec.output if is_uri(spec.output) else str(Path(spec.output).expanduser().absolute())
    spec = dataclasses.replace(spec, base=str(Path(spec.base).absolute()), output=output.rstrip("/"))
    data_dir = base.data.data_dir
    if data_dir and not is_uri(data_dir):
        extra = (*extra, f"data.data_dir={Path(data_dir).expanduser().absolute()}")
    return spec, extra


class TrialProgress(tune.Callback):
    """A progress bar over the sweep's trials (finished, early-stopped or failed), with the
    best metric so far and the time left; Tune's own status table is off while it shows."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec, self.best, self.bar = spec, None, None

    def setup(self, **info) -> None:
        self.bar = tqdm(total=self.spec.num_samples, desc="trials", unit="trial")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.spec.metric)
        if isinstance(value, (int, float)) and value == value:
            better = self.best is None or (value > self.best if self.spec.mode == "max" else value < self.best)
            self.best = value if better else self.best
            self.bar.set_postfix_str(f"best {self.spec.metric} {self.best:.4g}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.bar.update(1)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.bar.update(1)

    def on_experiment_end(self, trials, **info) -> None:
        self.bar.close()


def run_sweep(spec: SweepSpec, extra: tuple[str, ...] = (), resume: bool = False, progress: bool = True) -> Sweep:
    """Check the sweep, run (or resume) it, and return its results."""
    space = check_sweep(spec, extra)
    spec, extra = _absolute(spec, extra)
    base = trial_config(spec, {}, extra)
    path = f"{spec.output}/{SWEEP_DIR}"
    if resume and not tune.Tuner.can_restore(path):
        raise ConfigError(f"nothing to resume at {path}: run the sweep without --resume first")
    connect(base.ray, embedded_cpus=os.cpu_count())  # an embedded Ray gets the whole machine
    resources = trial_resources(base)
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec, extra=extra), resources)
    if resume:
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"params": space},
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                num_samples=spec.num_samples,
                scheduler=_scheduler(spec, base),
                search_alg=_search(spec),
            ),
            run_config=tune.RunConfig(
                name=SWEEP_DIR,
                storage_path=spec.output,
                verbose=0 if progress else 1,
                callbacks=[TrialProgress(spec)] if progress else None,
            ),
        )
    trial_cpus = sum(b.get("CPU", 0) for b in resources.bundles)
    at_once = math.floor(ray.cluster_resources().get("CPU", 0) / trial_cpus)
    if spec.max_concurrent_trials:
        at_once = min(at_once, spec.max_concurrent_trials)
    print(f"sweep: {spec.num_samples} trials of {trial_cpus:g} CPUs; {at_once} at once")
    return Sweep(tuner.fit(), spec, extra)
