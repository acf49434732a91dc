"""The meta-training driver: rounds of parallel adaptation, aggregation, validation.

for round in 1..R:
    tasks ← sampler.spec(round · B + i), i < B        (deterministic, resumable)
    g_i   ← adapter.adapt(θ, task_i)                   (in parallel, Ray actors)
    θ     ← aggregator.step(mean_i g_i)
    every E rounds: meta-validate θ on held-out classes; checkpoint
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import ray
from tqdm.auto import tqdm

from metaray.checkpoint import check_prompt_settings, load_checkpoint, resolve_checkpoint, save_checkpoint
from metaray.config import ConfigError, ExperimentConfig, experiment_from_dict, to_dict
from metaray.data import DataRegistry, TaskSampler, TaskSpec
from metaray.distributed.runners import Runner, make_runner
from metaray.distributed.zero import check_deepspeed
from metaray.errors import MetarayError
from metaray.kinds import kind_of
from metaray.metrics import MetricsWriter, write_curves
from metaray.storage import RunStore


def preflight(cfg: ExperimentConfig) -> TaskSampler:
    """Every check that can fail before actors start: the kind's rules, data, episode
    shapes, backbone, the teacher of `meta.distill`, DeepSpeed for sharded mode, and that the output folder (path or
    URI) can be opened."""
    kind = kind_of(cfg)
    RunStore(cfg.output.dir)
    if cfg.prompt.warm_start:
        resolve_checkpoint(cfg.prompt.warm_start)  # fail before any actor starts
    if cfg.sharded.enabled:
        check_deepspeed()
    registry = DataRegistry.from_config(cfg.data)
    d = cfg.data
    needed = d.k_shot + d.q_query
    smallest = 2 if d.ways else d.n_way  # with ways, a family with 2 classes can give a (capped) task
    counts = [kind.family_size(registry, f, smallest, d.k_shot, needed, d.same_domain) for f in d.meta_train]
    if d.ways:  # each task's ways are capped at its family's classes with enough examples
        counts = [kind.task_classes(registry, f, needed) for f in d.meta_train]
    if cfg.meta.eval_every:
        kind.family_size(registry, d.meta_val, d.n_way, d.k_shot, needed)
    kind.check_backbone(cfg.model, cfg.prompt)
    if cfg.meta.distill:  # the teacher loads in every actor: refuse it here if it cannot, or cannot fit
        kind.check_teacher(cfg)
    n_way = kind.task_ways(d.n_way)
    ways = tuple(kind.task_ways(w) for w in d.ways)
    return TaskSampler(tuple(d.meta_train), tuple(counts), n_way, d.k_shot, d.q_query, d.seed, d.same_domain, ways)


def validation_specs(cfg: ExperimentConfig) -> list[TaskSpec]:
    """A fixed set of meta-val episodes, the same at every validation."""
    d = cfg.data
    n_way = kind_of(cfg).task_ways(d.n_way)
    return [TaskSpec(d.meta_val, i, n_way, d.k_shot, d.q_query, d.seed + 1) for i in range(cfg.meta.val_episodes)]


def meta_validate(runner: Runner, cfg: ExperimentConfig, meta_prompt) -> float:
    """Mean query score (%) after `meta.val_steps` steps from θ, in the kind's validation
    metric: prototype accuracy (linear-probe accuracy for a head-matched objective), or
    answer F1 for question answering."""
    inner = dataclasses.replace(cfg.meta.inner, steps=cfg.meta.val_steps)
    units = [(meta_prompt, spec) for spec in validation_specs(cfg)]
    metric = kind_of(cfg).validation_metric(cfg.meta)
    results = runner.evaluate(units, (cfg.meta.val_steps,), inner, (metric,))
    return sum(r.scores[cfg.meta.val_steps][metric] for r in results) / len(results)


# What each round's metrics hold (meta_val_score only at meta-validation rounds: the kind's
# validation score, prototype accuracy or answer F1; files written before it was renamed
# call it meta_val_acc, LEGACY_METRICS).
REPORTED_METRICS = (
    "round",
    "tasks",
    "dropped",
    "support_loss",
    "query_loss",
    "pseudo_grad_norm",
    "tasks_per_s",
    "meta_val_score",
)
LEGACY_METRICS = {"meta_val_acc": "meta_val_score", "best_meta_val_acc": "best_meta_val_score"}


def best_score(meta: dict) -> float:
    """A checkpoint's best meta-validation score (under its old name in older checkpoints)."""
    return float(meta.get("best_meta_val_score", meta.get("best_meta_val_acc", float("-inf"))))


# Settings a resumed run must share with the run it continues: anything else would
# change the model, the shape of θ or its optimizer state, or the task sequence.
RESUME_KEYS = (
    ("model", "backbone"),
    ("model", "max_context_tokens"),
    ("model", "max_answer_tokens"),
    ("model", "max_length"),
    ("model", "pool_prompt"),
    ("model", "prompt_position"),
    ("model", "answer_decoding"),  # how meta-validation reads answers: the best θ is chosen on it
    ("prompt", "length"),
    ("prompt", "depth"),
    ("prompt", "pool_size"),
    ("prompt", "pool_temperature"),
    ("data", "meta_train"),
    ("data", "n_way"),
    ("data", "k_shot"),
    ("data", "q_query"),
    ("data", "same_domain"),
    ("data", "ways"),
    ("data", "seed"),
    ("meta", "algorithm"),
    ("meta", "meta_batch_size"),
    ("meta", "inner"),
    ("meta", "outer_optimizer"),
    ("meta", "consistency"),
)


class RunInterrupted(MetarayError, RuntimeError):
    """The cluster failed under a run (a lost node, a dead aggregator); the message names the
    checkpoint that `--resume` continues from."""


def interrupted(err: ray.exceptions.RayError, run_dir: str) -> RunInterrupted:
    """What a Ray failure under a run means for the user: where to resume from."""
    try:
        where = f"the latest checkpoint is {resolve_checkpoint(run_dir, 'latest')}: the same command with --resume "
        where += "continues from it, bit-identical to a run without the failure"
    except MetarayError:
        where = "no checkpoint was written yet: run the same command again"
    cause = (str(err).strip().splitlines() or [""])[0][:300]
    return RunInterrupted(f"the Ray cluster failed under the run ({type(err).__name__}: {cause}); {where}")


def check_resumable(cfg: ExperimentConfig, saved: dict) -> None:
    """Refuse to continue a run under a config that would break it, listing every difference."""
    now = to_dict(cfg)
    saved = to_dict(experiment_from_dict(saved))  # settings added since the checkpoint: their defaults
    diffs = [
        f"{section}.{key}: checkpoint {saved.get(section, {}).get(key)!r}, now {now[section][key]!r}"
        for section, key in RESUME_KEYS
        if saved.get(section, {}).get(key) != now[section][key]
    ]
    if diffs:
        raise ConfigError("cannot resume with a config that changes the run:\n  " + "\n  ".join(diffs))


def start_prompt(runner: Runner, cfg: ExperimentConfig):
    """θ₀: per `prompt.init`, or the best θ of the checkpoint `prompt.warm_start` names
    (which must have this run's shape: same backbone width and prompt length)."""
    theta = runner.init_prompt()
    if not cfg.prompt.warm_start:
        return theta
    state, meta = load_checkpoint(cfg.prompt.warm_start)
    check_prompt_settings(f"prompt.warm_start={cfg.prompt.warm_start}", state, meta, cfg.prompt)
    warm = state["meta_prompt"]
    if warm.shape != theta.shape:
        raise ConfigError(
            f"prompt.warm_start={cfg.prompt.warm_start}: its prompt has shape {tuple(warm.shape)} (length, width), "
            f"this run's has {tuple(theta.shape)}; use a checkpoint of the same backbone, prompt.length, "
            "prompt.depth and prompt.pool_size"
        )
    return warm.to(theta.dtype)


def _start(runner: Runner, cfg: ExperimentConfig, run_dir: str, resume: bool) -> tuple[int, float]:
    """Start the aggregator fresh, or from the latest checkpoint; (first round, best meta-val)."""
    if not resume:
        runner.start(start_prompt(runner, cfg))
        return 0, float("-inf")
    state, meta = load_checkpoint(run_dir, "latest")
    check_resumable(cfg, meta["config"])
    runner.start(state["meta_prompt"], state)
    return int(state["round"]), best_score(meta)


def train(
    cfg: ExperimentConfig,
    progress: bool = True,
    runner: Runner | None = None,
    resume: bool = False,
    on_round: Callable[[dict], None] | None = None,
) -> dict:
    """Meta-train θ per `cfg`; returns a summary (final round, best meta-val, paths).
    `resume`: continue from `output.dir`'s latest checkpoint; tasks are a pure function
    of their index and θ + the outer optimizer state are restored, so the result is
    bit-identical to an uninterrupted run. A `runner` passed in is left running.
    `on_round(metrics)`: called after each round is logged and checkpointed (a sweep
    reports to its scheduler there; REPORTED_METRICS names what it may see)."""
    sampler = preflight(cfg)
    run_dir = cfg.output.dir  # a path every node sees, or an object-storage URI
    if resume:
        resolve_checkpoint(run_dir, "latest")  # fail before any actor starts
    own_runner = runner is None
    runner = runner or make_runner(cfg)
    writer = MetricsWriter(run_dir, cfg.output.tensorboard)
    last_val, b = float("nan"), cfg.meta.meta_batch_size
    try:
        first, best_val = _start(runner, cfg, run_dir, resume)
        bar = tqdm(range(first, cfg.meta.rounds), desc="meta-train", unit="round", disable=not progress)
        for r in bar:
            start = time.perf_counter()
            metrics = runner.round([sampler.spec(r * b + i) for i in range(b)])
            metrics["tasks_per_s"] = metrics["tasks"] / (time.perf_counter() - start)
            metrics["dropped"] = b - metrics["tasks"]  # stragglers past meta.round_deadline_s
            last = r + 1 == cfg.meta.rounds
            validate = cfg.meta.eval_every and ((r + 1) % cfg.meta.eval_every == 0 or last)
            if validate:
                last_val = metrics["meta_val_score"] = meta_validate(runner, cfg, runner.meta_prompt())
            is_best = bool(validate) and last_val > best_val
            best_val = max(best_val, last_val) if validate else best_val
            writer.write(metrics)
            bar.set_postfix(
                tasks_s=f"{metrics['tasks_per_s']:.2f}",
                sup=f"{metrics['support_loss']:.3f}",
                qry=f"{metrics['query_loss']:.3f}",
                val=f"{last_val:.1f}",
            )
            if validate or last or (r + 1) % cfg.output.checkpoint_every == 0:
                info = {"config": to_dict(cfg), "metrics": metrics, "best_meta_val_score": best_val}
                save_checkpoint(run_dir, runner.aggregator_state(), info, cfg.output.keep_last, best=is_best)
            if on_round is not None:
                on_round(metrics)
        write_curves(run_dir)
    except ray.exceptions.RayError as err:
        if isinstance(err, ray.exceptions.RayTaskError):  # the task's own error (bad data, ...): as it is
            raise
        raise interrupted(err, run_dir) from err
    finally:
        writer.close()
        if own_runner:
            runner.shutdown()
    return {"rounds": cfg.meta.rounds, "best_meta_val_score": best_val, "run_dir": run_dir}
