"""What bench/qa.py and bench/image.py share: one meta-training run per algorithm, and
the `eval.checkpoints` override that names them."""

from __future__ import annotations

import time
from pathlib import Path

from metaray.config import load_config
from metaray.distributed import train


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


def checkpoints_override(prefix: str, algorithms: dict) -> str:
    """`eval.checkpoints={multitask: runs/PREFIX-multitask, ...}`"""
    runs = run_dirs(prefix, algorithms)
    return "eval.checkpoints={" + ", ".join(f"{name}: {run}" for name, run in runs.items()) + "}"
