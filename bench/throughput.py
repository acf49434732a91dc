"""bench/throughput: tasks adapted per second, Ray actors against a plain loop.

    python bench/throughput.py [--rounds 6] [overrides ...]

Runs the same meta-training rounds (configs/demo.yaml tasks, deterministic) three
ways: one process with no Ray (LocalRunner), Ray with 1 actor, Ray with 2 actors.
The first round of each is a warm-up (actor start, backbone load) and not timed.
Reports tasks/s and the ratios 1 actor / plain loop (Ray's cost) and 2 / 1 actors
(scaling); writes bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import ray
import torch

from metaray.config import load_config
from metaray.distributed import make_runner, preflight
from metaray.eval import write_result

ROOT = Path(__file__).resolve().parents[1]


def tasks_per_second(overrides: list[str], rounds: int) -> tuple[float, torch.Tensor]:
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["meta.eval_every=0", *overrides])
    sampler = preflight(cfg)
    runner = make_runner(cfg)
    try:
        runner.start(runner.init_prompt())
        b = cfg.meta.meta_batch_size
        runner.round([sampler.spec(i) for i in range(b)])  # warm-up
        start = time.perf_counter()
        for r in range(1, rounds + 1):
            runner.round([sampler.spec(r * b + i) for i in range(b)])
        seconds = time.perf_counter() - start
        return rounds * b / seconds, runner.meta_prompt()
    finally:
        runner.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False)
    runs = {
        "plain loop (no Ray)": ["ray.local=true"],
        "Ray, 1 actor": ["ray.num_actors=1"],
        "Ray, 2 actors": ["ray.num_actors=2"],
    }
    rates, thetas = {}, {}
    for name, extra in runs.items():
        rates[name], thetas[name] = tasks_per_second([*extra, *args.overrides], args.rounds)
        print(f"{name}: {rates[name]:.3f} tasks/s", flush=True)
    ratios = {
        "1 actor / plain loop": rates["Ray, 1 actor"] / rates["plain loop (no Ray)"],
        "2 actors / 1 actor": rates["Ray, 2 actors"] / rates["Ray, 1 actor"],
    }
    same = all(torch.allclose(t, thetas["plain loop (no Ray)"], atol=1e-6) for t in thetas.values())
    print("\n| run | tasks/s |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.3f} |")
    for name, ratio in ratios.items():
        print(f"| {name} | {ratio:.3f} |")
    print(f"\nsame θ from all three runs: {same}")
    result = {"tasks_per_s": rates, "ratios": ratios, "rounds": args.rounds, "same_theta": same}
    write_result(result, ROOT / "bench" / "results" / "throughput.json", "python " + shlex.join(sys.argv))


if __name__ == "__main__":
    main()
