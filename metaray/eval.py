"""The meta-test protocol and its baselines, shared by the CLI, Tune and benchmarks.

Every method adapts from its own initialisation on each test task's support set with
the same budget (`eval.inner`, up to max(`eval.steps`) steps) and is scored on the
query set after each budget in `eval.steps`. Classification scores two heads on the
same embeddings: cosine prototypes (`proto`) and a linear probe fit on the support set
(`probe`); question answering scores the greedy answers' SQuAD exact match (`em`) and
F1 (`f1`), a task being one held-out article.

Methods: protonet and linear_probe (classification: frozen backbone, no prompt);
instruction (qa: a hand-written instruction in place of the prompt, no tuning);
finetune (images: every backbone weight and a new linear layer, SGD with momentum);
random / text / vocab (prompt tuning from that init); multitask, reptile, fomaml (an
init read from a meta-training checkpoint named in `eval.checkpoints`).

Distillation (`distill.teacher`, classify and image): `teacher` scores the teacher alone (its linear
probe on the larger backbone), and every method of the student's (linear_probe and the
prompted ones) gains a `distilled` head: its probe fitted to the teacher's soft labels of
the support and of `distill.unlabeled` unused inputs of the task as well.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metaray.checkpoint import check_prompt_settings, load_checkpoint
from metaray.config import ConfigError, EvalConfig, ExperimentConfig
from metaray.data import DataRegistry, TaskSpec
from metaray.distributed.adapter import TEACHER_PREFIX, EvalResult
from metaray.distributed.runners import Runner, make_runner
from metaray.kinds import kind_of
from metaray.models import QA_METRICS
from metaray.models.classifier import DISTILLED
from metaray.storage import write_text

NO_PROMPT = {"protonet": ("proto",), "linear_probe": ("probe",), "instruction": QA_METRICS, "teacher": ("probe",)}
OWN_METHODS = ("finetune",)  # baselines the adapter runs itself (its unit's init is the name)
INIT_METHODS = ("random", "text", "vocab")
CHECKPOINT_METHODS = ("multitask", "reptile", "fomaml", "r2d2")


def preflight(cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    """Check the kind's rules, data, shapes, backbone and checkpoints before any work;
    return the checkpoint inits by method."""
    ev, kind = cfg.eval, kind_of(cfg)
    kind.check_target(DataRegistry.from_config(cfg.data), ev)
    kind.check_backbone(cfg.model, cfg.prompt)
    if cfg.distill.enabled:  # the kind's rules have refused a teacher where the kind has none
        kind.check_teacher(cfg)
    inits = {}
    for method in ev.methods:
        if method in CHECKPOINT_METHODS:
            if method not in ev.checkpoints:
                raise ConfigError(f"eval.methods has {method!r} but eval.checkpoints.{method} names no checkpoint")
            state, meta = load_checkpoint(ev.checkpoints[method])
            check_prompt_settings(f"eval.checkpoints.{method}={ev.checkpoints[method]}", state, meta, cfg.prompt)
            inits[method] = state["meta_prompt"]
    return inits


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and 95% normal-approximation confidence half-width."""
    arr = np.asarray(values, dtype=float)
    ci = 1.96 * arr.std(ddof=1) / math.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "ci95": float(ci), "n": len(arr)}


def _scores(values: list[float]) -> dict:
    """`summarise` and the per-task values, in task order (the same tasks for every method
    of a setting, so two methods' values pair up: see `paired_difference`)."""
    return summarise(values) | {"values": [round(v, 4) for v in values]}


def paired_difference(a: dict, b: dict) -> dict[str, float]:
    """Mean and 95% half-width (Student t) of the per-task difference a − b of two cells of
    one setting: what a comparison of methods on the same support draws rests on."""
    diffs = np.asarray(a["values"], dtype=float) - np.asarray(b["values"], dtype=float)
    n = len(diffs)
    half = t_975(n - 1) * diffs.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": float(diffs.mean()), "ci95": float(half), "n": n}


# Student t's 0.975 quantile by degrees of freedom 1..30; beyond, at most 2.042 (the normal's 1.96)
T_975 = dict(
    enumerate(
        (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
        + (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042),
        start=1,
    )
)


def t_975(df: int) -> float:
    """Student t's 0.975 quantile: the table to 30 degrees of freedom, then 2.0 to 60 and
    1.98 beyond (within 0.02 of the exact value)."""
    return T_975.get(df, 2.0 if df <= 60 else 1.98)


def _method_rows(results: list[EvalResult], heads: tuple[str, ...], prefix: str = "") -> dict:
    """Each head's scores at each budget; `prefix`: the heads' keys in the scores (`teacher.`)."""
    steps = sorted(results[0].scores)
    rows = {head: {str(t): _scores([r.scores[t][prefix + head] for r in results]) for t in steps} for head in heads}
    return {"heads": rows, "adapt_seconds": summarise([r.adapt_seconds for r in results])}


def evaluate(cfg: ExperimentConfig, runner: Runner | None = None, progress: bool = True) -> dict:
    """Run every method of `cfg.eval` on every setting; returns the result tree."""
    ev, kind = cfg.eval, kind_of(cfg)
    inits = preflight(cfg)
    if runner is not None:
        check_runner(cfg, runner)
    registry = DataRegistry.from_config(cfg.data)
    own_runner = runner is None
    runner = runner or make_runner(cfg)
    out: dict = {"config": dataclasses.asdict(ev), "settings": {}}
    try:
        for method in INIT_METHODS:
            if method in ev.methods:
                inits[method] = runner.init_prompt(dataclasses.replace(cfg.prompt, init=method))
        unlabeled = cfg.distill.unlabeled if cfg.distill.enabled else 0
        settings = {
            kind.setting_name(registry, ev, shot): [
                dataclasses.replace(s, unlabeled=unlabeled) for s in kind.test_specs(registry, ev, shot)
            ]
            for shot in ev.shots
        }
        units = {name: _units(ev, specs, inits) for name, specs in settings.items()}
        heads = kind.metrics + ((DISTILLED,) if cfg.distill.enabled else ())
        with tqdm(total=sum(map(len, units.values())), desc="eval", unit="task", disable=not progress) as bar:
            for name, specs in settings.items():
                bar.set_postfix_str(f"{name}: {', '.join(ev.methods)}")
                out["settings"][name] = _run_setting(runner, ev, len(specs), units[name], heads, bar.update)
    finally:
        if own_runner:
            runner.shutdown()
    return out


# what a runner's actors read from the config they were built with, not from `evaluate`'s
BUILT_WITH = (
    "kind",
    "model",
    "distill",
    "prompt.length",
    "prompt.depth",
    "prompt.region",
    "prompt.pool_size",
    "prompt.pool_temperature",
    "eval.finetune_lr",
)


def check_runner(cfg: ExperimentConfig, runner: Runner) -> None:
    """Refuse a runner built for another model than `cfg` asks for: its actors' backbone,
    prompt shape, teacher and fine-tuning rate are those of `runner.cfg` (a deep θ read by
    a shallow model would be scored as a longer prompt, without an error)."""
    for key in BUILT_WITH:
        built, wanted = (functools.reduce(getattr, key.split("."), c) for c in (runner.cfg, cfg))
        if built != wanted:
            raise ConfigError(
                f"evaluate: the runner's actors were built with {key}={built}, and this config has {key}={wanted}; "
                "build the runner from this config (make_runner(cfg)) or pass none"
            )


def _units(ev: EvalConfig, specs: list[TaskSpec], inits: dict) -> list:
    """(init, task) per prompted method and task, then one unprompted pass per task that
    all the no-prompt baselines share."""
    prompted = [m for m in ev.methods if m not in NO_PROMPT]
    units = [(m if m in OWN_METHODS else inits[m], s) for m in prompted for s in specs]
    return units + [(None, s) for s in specs if any(m in NO_PROMPT for m in ev.methods)]


def _run_setting(runner: Runner, ev: EvalConfig, n: int, units: list, heads, done=None) -> dict:
    """Every method's units on the same n tasks (`_units`), submitted together so that all
    actors stay busy."""
    prompted = [m for m in ev.methods if m not in NO_PROMPT]
    plain = [m for m in ev.methods if m in NO_PROMPT]
    results = runner.evaluate(units, ev.steps, ev.inner, heads, done)
    rows = {m: _method_rows(results[i * n : (i + 1) * n], heads) for i, m in enumerate(prompted)}
    rows |= {m: _method_rows(results[len(prompted) * n :], _plain_heads(m, heads), _prefix(m)) for m in plain}
    return {m: rows[m] for m in ev.methods}


def _plain_heads(method: str, heads: tuple[str, ...]) -> tuple[str, ...]:
    """A no-prompt baseline's heads: its own, and the distilled probe beside the linear probe."""
    return NO_PROMPT[method] + ((DISTILLED,) if method == "linear_probe" and DISTILLED in heads else ())


def _prefix(method: str) -> str:
    return TEACHER_PREFIX if method == "teacher" else ""


def _cell(summary: dict) -> str:
    """`mean ± ci95`, or the mean alone where one task gives no interval."""
    if summary.get("n", 2) < 2:
        return f"{summary['mean']:.1f}"
    return f"{summary['mean']:.1f} ± {summary['ci95']:.1f}"


def format_table(result: dict) -> str:
    """One markdown table per setting: method/head rows, one column per budget
    (mean ± 95% CI over tasks; the mean alone for a single task)."""
    lines = []
    for name, methods in result["settings"].items():
        steps = sorted({int(s) for m in methods.values() for h in m["heads"].values() for s in h}, key=int)
        lines += [f"\n{name}", "| method | head | " + " | ".join(f"{s} steps" for s in steps) + " | adapt s |"]
        lines.append("|---|---|" + "---|" * len(steps) + "---|")
        for method, row in methods.items():
            for head, by_step in row["heads"].items():
                cells = [_cell(by_step[str(s)]) if str(s) in by_step else "" for s in steps]
                lines.append(f"| {method} | {head} | " + " | ".join(cells) + f" | {row['adapt_seconds']['mean']:.1f} |")
    return "\n".join(lines)


def machine_description() -> str:
    """CPU model, core count and memory: what a reader needs to compare timings."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln), cpu)
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
    gpu = f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}){memory}, {gpu}"


def write_result(result: dict, location: str | Path, command: str) -> None:
    """JSON with the command, machine and date beside every figure: this run's, also where
    `result` holds an earlier run's (a bench that adds to its earlier results)."""
    provenance = {"command": command, "machine": machine_description(), "date": time.strftime("%Y-%m-%d")}
    result = {**provenance, **{k: v for k, v in result.items() if k not in provenance}}
    write_text(location, json.dumps(result, indent=2, default=str))
