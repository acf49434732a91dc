"""bench/tune: a real sweep on CLINC150 meta-validation, then meta-test best vs default.

    python bench/tune.py [--episodes 50] [--num-samples N]

1. `metaray tune tune_configs/intent.yaml` (Reptile on CLINC150 7 domains + SNIPS,
   scored on CLINC150's held-out `work` domain; ASHA; random search): trials.csv,
   curves.png and best.yaml in runs/tune/intent, copied to bench/results/tune/.
2. The default configuration (the same base, rounds and overrides, no searched
   values) is meta-trained too.
3. Both are meta-tested on BANKING77 5-way 1-shot episodes (never seen in training),
   with ProtoNet as the no-prompt reference, at 0 and 5 adaptation steps.
Writes bench/results/tune.json.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

import ray

from metaray.distributed import train
from metaray.eval import evaluate, format_table, write_result
from metaray.tuning import load_sweep, run_sweep, trial_config, write_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def meta_test(cfg_overrides: list[str], spec, run_dir: str, episodes: int) -> dict:
    evaluation = [
        "eval.protocol=episodes",
        "eval.target=banking77",
        "eval.n_way=5",
        "eval.shots=[1]",
        "eval.q_query=15",
        f"eval.episodes={episodes}",
        "eval.steps=[0, 5]",
        "eval.methods=[protonet, reptile]",
        f"eval.checkpoints.reptile={run_dir}",
        "ray.num_actors=2",
    ]
    cfg = trial_config(spec, {}, (*cfg_overrides, *evaluation))
    return evaluate(cfg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--num-samples", type=int)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    spec = load_sweep(ROOT / "tune_configs" / "intent.yaml", num_samples=args.num_samples)
    start = time.perf_counter()
    sweep = run_sweep(spec)
    summary = write_report(sweep)
    sweep_seconds = time.perf_counter() - start
    out = Path(sweep.spec.output)
    RESULTS.joinpath("tune").mkdir(parents=True, exist_ok=True)
    for name in ("trials.csv", "curves.png", "best.yaml"):
        shutil.copy(out / name, RESULTS / "tune" / name)
    best = [f"{path}={value}" for path, value in summary["best"]["params"].items()]
    default_dir = str(out / "default-run")
    start = time.perf_counter()
    train(trial_config(sweep.spec, {}, ("ray.num_actors=2", f"output.dir={default_dir}")))
    default_seconds = time.perf_counter() - start
    best_dir = str(out / "trials" / summary["best"]["trial_id"])
    results = {}
    for name, overrides, run_dir in (("default", [], default_dir), ("best", best, best_dir)):
        results[name] = meta_test(overrides, sweep.spec, run_dir, args.episodes)
        print(f"\n## {name} ({', '.join(overrides) or 'no searched values'})\n{format_table(results[name])}")
    write_result(
        {
            "sweep": {**summary, "seconds": sweep_seconds, "trials_csv": "bench/results/tune/trials.csv"},
            "default_train_seconds": default_seconds,
            "best_trial_dir": best_dir,
            "meta_test": results,
        },
        RESULTS / "tune.json",
        "python " + shlex.join(sys.argv),
    )


if __name__ == "__main__":
    main()
