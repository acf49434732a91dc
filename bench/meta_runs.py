"""What the task-kind benchmarks share: one meta-training run per algorithm, the
`eval.checkpoints` override that names them, and evaluating each method at its own
learning rate chosen on meta-val."""

from __future__ import annotations

import time
from pathlib import Path

from metaray.config import load_config
from metaray.distributed import train
from metaray.eval import evaluate


def algorithms(adam_lr: float) -> dict[str, list[str]]:
    """The three meta-training runs: Reptile with SGD (the config's outer lr), multitask and
    FOMAML with Adam at `adam_lr` (their outer gradients are gradients, not parameter steps)."""
    adam = ["meta.outer_optimizer=adam", f"meta.outer_lr={adam_lr}"]
    return {
        "multitask": ["meta.algorithm=multitask", *adam],
        "reptile": ["meta.algorithm=reptile"],
        "fomaml": ["meta.algorithm=fomaml", *adam],
    }


def run_dirs(prefix: str, algorithms: dict) -> dict[str, str]:
    return {name: f"runs/{prefix}-{name}" for name in algorithms}


def train_each(config: Path, algorithms: dict[str, list[str]], prefix: str, overrides: list[str]) -> dict:
    """Meta-train `config` once per algorithm (its overrides) into runs/PREFIX-NAME;
    returns each run's summary, seconds and overrides."""
    training = {}
    for name, extra in algorithms.items():
        cfg = load_config(config, [*extra, f"output.dir={run_dirs(prefix, algorithms)[name]}", *overrides])
        start = time.perf_counter()
        summary = train(cfg)
        training[name] = {**summary, "seconds": time.perf_counter() - start, "overrides": extra}
        print(f"[train] {name}: {training[name]}", flush=True)
    return training


def checkpoints_override(prefix: str, algorithms: dict, given: dict[str, str] | None = None) -> str:
    """`eval.checkpoints={multitask: runs/PREFIX-multitask, ...}`; `given` names a θ to
    read instead of an algorithm's own run (one trained elsewhere, e.g. by bench/scale)."""
    runs = {**run_dirs(prefix, algorithms), **(given or {})}
    return "eval.checkpoints={" + ", ".join(f"{name}: {run}" for name, run in runs.items()) + "}"


def select_inner_lr(config: Path, overrides: list[str], grid: list[float], head: str, runner=None) -> dict:
    """Each adapted method's `eval.inner.lr`: the grid value whose `head` after the full
    budget is best on the meta-val tasks (`overrides` point the evaluation at them), so
    that no method adapts at a rate tuned for another. Returns {method: {lr: score}}.
    `runner`: actors to reuse (the model loaded once for every call), else each call's own."""
    scores: dict[str, dict[float, float]] = {}
    for lr in grid:
        cfg = load_config(config, [*overrides, f"eval.inner.lr={lr}"])
        (setting,) = evaluate(cfg, runner)["settings"].values()
        for method, row in setting.items():
            scores.setdefault(method, {})[lr] = row["heads"][head][str(max(cfg.eval.steps))]["mean"]
        print(f"[select] lr {lr}: { {m: round(s[lr], 1) for m, s in scores.items()} }", flush=True)
    return scores


def evaluate_each_at(config: Path, overrides: list[str], lrs: dict[str, float], fixed: list[str], runner=None) -> dict:
    """One evaluation of the methods `lrs` names, each at its own `eval.inner.lr` (one
    `evaluate` per distinct rate, on the same tasks), plus the `fixed` methods that do
    not adapt; the settings merged, the fixed methods first. `runner`: as for `select_inner_lr`."""
    groups: dict[float, list[str]] = {}
    for method, lr in lrs.items():
        groups.setdefault(lr, []).append(method)
    merged: dict = {"settings": {}, "inner_lr": lrs}
    for i, (lr, methods) in enumerate(groups.items()):
        methods = [*fixed, *methods] if i == 0 else methods
        cfg = load_config(config, [*overrides, f"eval.inner.lr={lr}", f"eval.methods=[{','.join(methods)}]"])
        result = evaluate(cfg, runner)
        merged.setdefault("config", result["config"])
        for name, rows in result["settings"].items():
            merged["settings"].setdefault(name, {}).update(rows)
    order = [*fixed, *lrs]
    merged["settings"] = {n: {m: rows[m] for m in order} for n, rows in merged["settings"].items()}
    return merged
