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
from pathlib import Path

from tqdm.auto import tqdm

from metaray.checkpoint import save_checkpoint
from metaray.config import ExperimentConfig, to_dict
from metaray.data import TaskSampler, TaskSpec, check_feasible, load_corpus
from metaray.distributed.adapter import source_config
from metaray.distributed.runners import Runner, make_runner
from metaray.metrics import MetricsWriter
from metaray.models import check_backbone


def preflight(cfg: ExperimentConfig) -> TaskSampler:
    """Every check that can fail before actors start: data, episode shapes, backbone."""
    sources = source_config(cfg)
    check_backbone(cfg.model)
    d = cfg.data
    counts = []
    for family in d.meta_train:
        corpus = load_corpus(family, sources)
        check_feasible(corpus, d.n_way, d.k_shot + d.q_query, d.same_domain)
        counts.append(len(corpus.label_names))
    if cfg.meta.eval_every:
        check_feasible(load_corpus(d.meta_val, sources), d.n_way, d.k_shot + d.q_query)
    return TaskSampler(tuple(d.meta_train), tuple(counts), d.n_way, d.k_shot, d.q_query, d.seed, d.same_domain)


def validation_specs(cfg: ExperimentConfig) -> list[TaskSpec]:
    """A fixed set of meta-val episodes, the same at every validation."""
    d = cfg.data
    return [TaskSpec(d.meta_val, i, d.n_way, d.k_shot, d.q_query, d.seed + 1) for i in range(cfg.meta.val_episodes)]


def meta_validate(runner: Runner, cfg: ExperimentConfig, meta_prompt) -> float:
    """Mean query accuracy (%, prototype head) after `meta.val_steps` steps from θ."""
    inner = dataclasses.replace(cfg.meta.inner, steps=cfg.meta.val_steps)
    units = [(meta_prompt, spec) for spec in validation_specs(cfg)]
    results = runner.evaluate(units, (cfg.meta.val_steps,), inner, ("proto",))
    return sum(r.accuracy[cfg.meta.val_steps]["proto"] for r in results) / len(results)


def train(cfg: ExperimentConfig, progress: bool = True, runner: Runner | None = None) -> dict:
    """Meta-train θ per `cfg`; returns a summary (final round, best meta-val, paths).
    A `runner` passed in is left running (its caller shuts it down)."""
    sampler = preflight(cfg)
    run_dir = Path(cfg.output.dir)
    own_runner = runner is None
    runner = runner or make_runner(cfg)
    writer = MetricsWriter(run_dir, cfg.output.tensorboard)
    best_val, last_val = float("-inf"), float("nan")
    try:
        runner.start(runner.init_prompt())
        bar = tqdm(range(cfg.meta.rounds), desc="meta-train", unit="round", disable=not progress)
        for r in bar:
            start = time.perf_counter()
            specs = [sampler.spec(r * cfg.meta.meta_batch_size + i) for i in range(cfg.meta.meta_batch_size)]
            metrics = runner.round(specs)
            metrics["tasks_per_s"] = len(specs) / (time.perf_counter() - start)
            is_best = False
            due = cfg.meta.eval_every and ((r + 1) % cfg.meta.eval_every == 0 or r + 1 == cfg.meta.rounds)
            if due:
                last_val = meta_validate(runner, cfg, runner.meta_prompt())
                metrics["meta_val_acc"] = last_val
                is_best = last_val > best_val
                best_val = max(best_val, last_val)
            writer.write(metrics)
            bar.set_postfix(
                tasks_s=f"{metrics['tasks_per_s']:.2f}",
                sup=f"{metrics['support_loss']:.3f}",
                qry=f"{metrics['query_loss']:.3f}",
                val=f"{last_val:.1f}",
            )
            if due or r + 1 == cfg.meta.rounds:
                info = {"config": to_dict(cfg), "metrics": metrics}
                save_checkpoint(run_dir, runner.aggregator_state(), info, cfg.output.keep_last, best=is_best)
    finally:
        writer.close()
        if own_runner:
            runner.shutdown()
    return {"rounds": cfg.meta.rounds, "best_meta_val_acc": best_val, "run_dir": str(run_dir)}
