"""bench/image: meta-learned visual prompts on Omniglot (frozen EfficientNet-Lite0).

    python bench/image.py                  # the whole protocol (~55 min on 2 cores)
    python bench/image.py --skip-train     # evaluation only, reusing runs/omniglot-* checkpoints
    python bench/image.py --skip-train --only "20-way 1-shot"   # one setting; the others kept

1. meta-train a visual prompt (pixels added to the whole image) on 5-way 1-shot tasks
   of the 4 meta-train alphabets with multitask, Reptile and first-order MAML
   (configs/omniglot.yaml; each algorithm its own run, runs/omniglot-NAME);
2. on the 3 held-out alphabets (Korean, Sanskrit, Tagalog), 5-way 1-shot and 20-way
   1-shot episodes (5 queries per class): frozen-feature ProtoNet and linear probe,
   fine-tuning the whole backbone plus a new linear layer (SGD, momentum 0.9), the
   visual prompt from random init, and the three meta-learned inits, each with the same
   budget (up to 20 steps, each on every support drawing and 2 warped copies of each);
   accuracy after 0, 5 and 20 steps, mean ± 95% CI.
Prints the tables and the targets (the best meta-learned prompt above the frozen-feature
ProtoNet and above full fine-tuning), and writes bench/results/image.json.
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
CONFIG = ROOT / "configs" / "omniglot.yaml"
ALGORITHMS = algorithms(adam_lr=0.005)
METHODS = "eval.methods=[protonet,linear_probe,finetune,random,multitask,reptile,fomaml]"
SETTINGS = {
    "5-way 1-shot": ["eval.n_way=5", "eval.episodes=60"],
    "20-way 1-shot": ["eval.n_way=20", "eval.episodes=30"],
}
META_LEARNED = ("reptile", "fomaml")


def targets(methods: dict, steps: str) -> dict:
    """The best meta-learned prompt (either head, after `steps`) against ProtoNet and the
    best fine-tuning result (either head)."""

    def best(method: str, at: str) -> float:
        return max(row[at]["mean"] for row in methods[method]["heads"].values())

    meta = max(META_LEARNED, key=lambda m: best(m, steps))
    return {
        "best_meta_learned": meta,
        "accuracy": best(meta, steps),
        "over_protonet": best(meta, steps) - best("protonet", "0"),
        "over_finetune": best(meta, steps) - best("finetune", steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--only", choices=list(SETTINGS), help="evaluate this setting; keep the others' results")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    path = ROOT / "bench" / "results" / "image.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    kept = {n: {"command": previous.get("command"), **e} for n, e in previous.get("evaluations", {}).items()}
    out: dict = {"training": previous.get("training", {}) if args.skip_train else {}}
    out["evaluations"] = kept if args.only else {}
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    if not args.skip_train:
        out["training"] = train_each(CONFIG, ALGORITHMS, "omniglot", args.overrides)
    for name, extra in ({args.only: SETTINGS[args.only]} if args.only else SETTINGS).items():
        cfg = load_config(CONFIG, [checkpoints_override("omniglot", ALGORITHMS), METHODS, *extra, *args.overrides])
        start = time.perf_counter()
        result = evaluate(cfg)
        steps = str(max(cfg.eval.steps))
        found = targets(result["settings"][name], steps)
        seconds = time.perf_counter() - start
        out["evaluations"][name] = {**result, "seconds": seconds, "targets": found, "command": command}
        print(f"\n## {name}\n{format_table(result)}\n\ntargets: {found}", flush=True)
        write_result(out, path, command)


if __name__ == "__main__":
    main()
