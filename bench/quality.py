"""bench/quality: meta-train multitask / Reptile / FOMAML inits, then meta-test every method.

    python bench/quality.py                      # the whole protocol (~90 min on 2 cores)
    python bench/quality.py --skip-train --settings clinc150-within --episodes 30
                                                 # one setting, reusing runs/cross-* checkpoints

1. meta-train on CLINC150 (7 domains) + SNIPS, select on CLINC150 "work"
   (configs/crossdataset.yaml), once per algorithm;
2. cross-dataset: BANKING77 77-way 5-shot and 10-shot (support from its train file,
   10 test queries per class), every method, budgets 0/5/20/80 steps;
3. cross-dataset: BANKING77 5-way 1-shot episodes;
4. within-dataset: CLINC150 held-out domains, 5-way 1-shot and 5-shot episodes
   (configs/within-clinc150.yaml).
Prints each table and merges what it ran into bench/results/quality.json, each entry
with the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import ray

from metaray.config import load_config
from metaray.distributed import train
from metaray.eval import evaluate, format_table, write_result

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = {
    "multitask": ["meta.algorithm=multitask", "meta.outer_optimizer=adam", "meta.outer_lr=5e-3"],
    "reptile": ["meta.algorithm=reptile"],
    "fomaml": ["meta.algorithm=fomaml", "meta.outer_optimizer=adam", "meta.outer_lr=5e-3"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--episodes", type=int, default=50, help="BANKING77 / CLINC150 episodes per setting")
    parser.add_argument("--settings", nargs="*", help="evaluation settings to run (default: all)")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    cross, within = ROOT / "configs" / "crossdataset.yaml", ROOT / "configs" / "within-clinc150.yaml"
    path = ROOT / "bench" / "results" / "quality.json"
    out: dict = json.loads(path.read_text()) if path.is_file() else {}
    out.setdefault("training", {})
    out.setdefault("evaluations", {})
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    if not args.skip_train:
        for name, extra in ALGORITHMS.items():
            cfg = load_config(cross, [*extra, f"output.dir=runs/cross-{name}", *args.overrides])
            start = time.perf_counter()
            summary = train(cfg)
            seconds = time.perf_counter() - start
            out["training"][name] = {**summary, "seconds": seconds, "overrides": extra, "command": command}
            print(f"[train] {name}: {out['training'][name]}", flush=True)
    settings = {
        "banking77-full": (cross, []),
        "banking77-5way": (
            cross,
            ["eval.protocol=episodes", f"eval.episodes={args.episodes}", "eval.shots=[1]", "eval.steps=[0,5,20]"],
        ),
        "clinc150-within": (within, [f"eval.episodes={args.episodes}"]),
    }
    for name, (config_path, extra) in settings.items():
        if args.settings and name not in args.settings:
            continue
        cfg = load_config(config_path, [*extra, *args.overrides])
        start = time.perf_counter()
        result = evaluate(cfg)
        out["evaluations"][name] = {**result, "seconds": time.perf_counter() - start, "command": command}
        print(f"\n## {name}\n{format_table(result)}", flush=True)
        write_result(out, path, command)


if __name__ == "__main__":
    main()
