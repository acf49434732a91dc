"""bench/qa: meta-learned soft prompts for question answering (SmolLM2-135M-Instruct, XQuAD-en).

    python bench/qa.py                   # the whole protocol (~32 min on 2 cores)
    python bench/qa.py --skip-train      # evaluation only, reusing runs/qa-* checkpoints
    python bench/qa.py --config configs/squad.yaml --out squad.json   # meta-train on SQuAD's articles
    python bench/qa.py --config configs/squad.yaml --algorithms reptile \
        --checkpoint reptile=runs/scale-qa/points/round-000320 --out squad-scale.json  # a θ from bench/scale

1. meta-train a prompt on the meta-train articles with multitask, Reptile and
   first-order MAML (configs/qa.yaml, or `--config`; each algorithm its own run,
   runs/STEM-NAME, STEM the config file's name);
2. choose each adapted method's learning rate (`--lr-grid`) by its F1 after the budget
   on the 6 meta-val articles: one rate for all would be tuned for some init and against
   the others (a step that suits a random init overshoots near a good one);
3. on the 10 held-out articles (4 support questions each, all its others as queries): the
   hand-written instruction (no tuning), prompt tuning from random and from text init,
   and the three meta-learned inits, each adapted with the same budget (4 Adam steps on
   2 questions at a time, the budget meta-training adapts with) at its chosen rate;
   SQuAD exact match and F1 of the greedy answers after 0 and 4 steps.
Prints the table and the targets (the best meta-learned init, after the budget, at least
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
from meta_runs import algorithms, checkpoints_override, evaluate_each_at, select_inner_lr, train_each

from metaray.config import load_config
from metaray.data import DataRegistry
from metaray.distributed import make_runner
from metaray.eval import NO_PROMPT, format_table, preflight, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "qa.yaml"
ALGORITHMS = algorithms(adam_lr=0.03)
META_LEARNED = ("reptile", "fomaml")
LR_GRID = [0.01, 0.03, 0.1]  # each adapted method's eval.inner.lr is chosen from these on meta-val


def val_overrides(cfg, methods: list[str]) -> list[str]:
    """The evaluation on the meta-val articles (one episode each, all their other questions
    as queries, as on test), after the full budget only, at the fewest shots."""
    n_articles = len(DataRegistry.from_config(cfg.data).load(cfg.data.meta_val))
    return [
        f"eval.target={cfg.data.meta_val}",
        f"eval.episodes={n_articles}",
        f"eval.steps=[{max(cfg.eval.steps)}]",
        f"eval.shots=[{min(cfg.eval.shots)}]",
        f"eval.methods=[{','.join(methods)}]",
    ]


def targets(methods: dict, steps: str) -> dict:
    """F1 after `steps` steps: the best meta-learned init against the two baselines."""

    def f1(method: str, at: str = steps) -> float:
        return methods[method]["heads"]["f1"][at]["mean"]

    best = max((m for m in META_LEARNED if m in methods), key=f1)
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
    parser.add_argument("--config", type=Path, default=CONFIG, help="the QA config (default configs/qa.yaml)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--algorithms", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    parser.add_argument("--lr-grid", type=float, nargs="+", default=LR_GRID, help="eval.inner.lr values")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="read algorithm NAME's θ from PATH (a run or round folder) instead of training it",
    )
    parser.add_argument("--out", default="qa.json", help="file name under bench/results/")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    config, prefix = args.config.resolve(), args.config.stem
    chosen = {name: ALGORITHMS[name] for name in args.algorithms}
    if bad := [item for item in args.checkpoint if "=" not in item]:
        parser.error(f"--checkpoint takes NAME=PATH, got {bad}")
    given = dict(item.split("=", 1) for item in args.checkpoint)
    if unknown := sorted(set(given) - set(chosen)):
        parser.error(f"--checkpoint names {unknown}, not among --algorithms {sorted(chosen)}")
    path = ROOT / "bench" / "results" / args.out
    previous = json.loads(path.read_text()) if path.is_file() else {}
    out: dict = {"training": previous.get("training", {}) if args.skip_train else {}}
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    if not args.skip_train:
        to_train = {name: extra for name, extra in chosen.items() if name not in given}
        out["training"] = train_each(config, to_train, prefix, args.overrides)
    out["training"].update({name: {"checkpoint": where} for name, where in given.items()})
    methods = ["instruction", "random", "text", *chosen]
    overrides = [checkpoints_override(prefix, chosen, given), f"eval.methods=[{','.join(methods)}]", *args.overrides]
    cfg = load_config(config, overrides)
    preflight(cfg)  # the test evaluation's data and checkpoints, before the selection's minutes
    adapted = [m for m in cfg.eval.methods if m not in NO_PROMPT]
    runner = make_runner(cfg)  # one set of actors (one model load) for every evaluation below
    try:
        start = time.perf_counter()
        scores = select_inner_lr(config, [*overrides, *val_overrides(cfg, adapted)], args.lr_grid, "f1", runner)
        lrs = {m: max(args.lr_grid, key=scores[m].get) for m in adapted}  # ties: the smaller rate
        out["selection"] = {"grid": args.lr_grid, "meta_val_f1": scores, "inner_lr": lrs}
        out["selection"]["seconds"] = time.perf_counter() - start
        print(f"[select] each method's eval.inner.lr: {lrs}", flush=True)
        start = time.perf_counter()
        fixed = [m for m in cfg.eval.methods if m in NO_PROMPT]
        result = evaluate_each_at(config, overrides, lrs, fixed, runner)
        out["evaluation"] = {**result, "seconds": time.perf_counter() - start}
    finally:
        runner.shutdown()
    if {"instruction", "random"} <= set(cfg.eval.methods) and set(META_LEARNED) & set(cfg.eval.methods):
        steps = str(max(cfg.eval.steps))
        out["targets"] = {name: targets(rows, steps) for name, rows in result["settings"].items()}
    print(f"\n{format_table(result)}\n\ntargets: {out.get('targets')}", flush=True)
    write_result(out, path, command)


if __name__ == "__main__":
    main()
