"""bench/qa: meta-learned soft prompts for question answering (SmolLM2-135M-Instruct, XQuAD-en).

    python bench/qa.py                   # the whole protocol (~30 min on 2 cores)
    python bench/qa.py --skip-train      # evaluation only, reusing runs/qa-* checkpoints
    python bench/qa.py --skip-train --out qa-val-lr0.03.json eval.target=xquad/val eval.episodes=6 \
        eval.inner.lr=0.03 "eval.methods=[random,reptile]"     # choosing the budget's lr on meta-val

1. meta-train a prompt on the meta-train articles with multitask, Reptile and
   first-order MAML (configs/qa.yaml; each algorithm its own run, runs/qa-NAME);
2. on the 10 held-out articles (4 support questions each, 6 others as queries): the
   hand-written instruction (no tuning), prompt tuning from random and from text init,
   and the three meta-learned inits, each adapted with the same budget (8 Adam steps);
   SQuAD exact match and F1 of the greedy answers after 0 and 8 steps.
Prints the table and the targets (the best meta-learned init, after 8 steps, at least
15 F1 above the instruction and 5 above random init), and writes bench/results/qa.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import ray
from meta_runs import algorithms, checkpoints_override, train_each

from metaray.config import load_config
from metaray.eval import evaluate, format_table, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "qa.yaml"
ALGORITHMS = algorithms(adam_lr=0.03)
META_LEARNED = ("reptile", "fomaml")


def targets(methods: dict, steps: str) -> dict:
    """F1 after `steps` steps: the best meta-learned init against the two baselines."""

    def f1(method: str, at: str = steps) -> float:
        return methods[method]["heads"]["f1"][at]["mean"]

    best = max(META_LEARNED, key=f1)
    over_instruction, over_random = f1(best) - f1("instruction", "0"), f1(best) - f1("random")
    return {
        "best_meta_learned": best,
        "f1_over_instruction": over_instruction,
        "f1_over_random_init": over_random,
        "met_instruction_plus_15": over_instruction >= 15,
        "met_random_plus_5": over_random >= 5,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", default="qa.json", help="file name under bench/results/")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    path = ROOT / "bench" / "results" / args.out
    previous = json.loads(path.read_text()) if path.is_file() else {}
    out: dict = {"training": previous.get("training", {}) if args.skip_train else {}}
    ray.init(num_cpus=2, include_dashboard=False)
    if not args.skip_train:
        out["training"] = train_each(CONFIG, ALGORITHMS, "qa", args.overrides)
    cfg = load_config(CONFIG, [checkpoints_override("qa", ALGORITHMS), *args.overrides])
    start = time.perf_counter()
    result = evaluate(cfg)
    out["evaluation"] = {**result, "seconds": time.perf_counter() - start}
    (setting,) = result["settings"]
    if {"instruction", "random", *META_LEARNED} <= set(cfg.eval.methods):
        out["targets"] = targets(result["settings"][setting], str(max(cfg.eval.steps)))
    print(f"\n## {setting}\n{format_table(result)}\n\ntargets: {out.get('targets')}", flush=True)
    write_result(out, path, command)


if __name__ == "__main__":
    main()
