"""bench/scaling: throughput, per-round costs, memory per actor, and a projection.

    python bench/scaling.py [--rounds 6] [--passes 2] [--skip-memory] [--out FILE] [overrides ...]

1. Tasks adapted per second for the same meta-training rounds (configs/demo.yaml,
   deterministic) three ways: one process with no Ray, Ray with 1 actor, Ray with 2
   actors. The first round of each is a warm-up (actor start, backbone load). The three
   run in turn `--passes` times (interleaved, so that the machine's drift reaches all
   three alike); the rates are over every pass, and each pass's ratios are kept.
2. The per-round costs a larger cluster would pay: seconds per task, Ray's dispatch
   overhead per round, the aggregator's cost per pseudo-gradient (measured with 4 to
   64 gradients in the object store) and the size of θ and of each g_i.
3. From those, a projection to 8, 64 and 512 workers with a flat aggregator, with the
   tree as built (`meta.aggregation=tree`: the root steps with one partial sum per node,
   measured; the driver still submits every task) and with a full reduction tree that
   also relays θ and the submissions (modelled; see `projection`).
4. Memory of each adapter actor (2 actors) with the backbone shared through the
   object store and with a private copy, for MiniLM and SmolLM2-135M.
Writes bench/results/scaling.json (or --out).
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import ray
import torch

from metaray.config import load_config
from metaray.core import partial_sum
from metaray.distributed import RayRunner, TaskResult, make_runner, preflight
from metaray.distributed.aggregator import MetaAggregator
from metaray.eval import write_result

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"plain loop (no Ray)": ["ray.local=true"], "Ray, 1 actor": ["ray.num_actors=1"], "Ray, 2 actors": []}
BACKBONES = {"MiniLM-L6 (22.7M)": "all-MiniLM-L6-v2", "SmolLM2-135M (GGUF, fp32)": "SmolLM2-135M-Instruct"}


def timed_rounds(overrides: list[str], rounds: int) -> tuple[list[float], torch.Tensor, int]:
    """Seconds per round after a warm-up round, the final θ, and the tasks per round."""
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["meta.eval_every=0", *overrides])
    sampler, b = preflight(cfg), cfg.meta.meta_batch_size
    runner = make_runner(cfg)
    try:
        runner.start(runner.init_prompt())
        runner.round([sampler.spec(i) for i in range(b)])  # warm-up
        seconds = []
        for r in range(1, rounds + 1):
            start = time.perf_counter()
            runner.round([sampler.spec(r * b + i) for i in range(b)])
            seconds.append(time.perf_counter() - start)
        return seconds, runner.meta_prompt(), b
    finally:
        runner.shutdown()


def aggregation_cost(
    shape: tuple[int, int], counts=(4, 16, 64), repeats: int = 5, partials: bool = False
) -> dict[int, float]:
    """Median seconds for the aggregator actor to fetch and average N pseudo-gradients
    that sit in the object store (as the adapters' return values do), and step θ; with
    `partials`, N per-node partial sums (the tree's root, `step_partials`)."""
    aggregator = ray.remote(MetaAggregator).options(num_cpus=0).remote(torch.zeros(shape), load_config(None).meta)
    cost = {}
    for n in counts:
        times = []
        for _ in range(repeats):
            results = [TaskResult(torch.randn(shape), 0.0, 0.0, None) for _ in range(n)]
            refs = [ray.put(partial_sum([r]) if partials else r) for r in results]
            start = time.perf_counter()
            ray.get((aggregator.step_partials if partials else aggregator.step).remote(*refs))
            times.append(time.perf_counter() - start)
        cost[n] = statistics.median(times)
    ray.kill(aggregator)
    return cost


class _Idle:
    def call(self, theta) -> None:
        return None


def dispatch_cost(shape: tuple[int, int], n: int = 64, repeats: int = 5) -> float:
    """Median seconds per actor call the driver submits and collects (θ by reference, as a
    round does), from the difference between n and 1 calls."""
    idle = ray.remote(_Idle).options(num_cpus=0).remote()
    theta = ray.put(torch.zeros(shape))
    times = {}
    for k in (1, n):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            ray.get([idle.call.remote(theta) for _ in range(k)])
            samples.append(time.perf_counter() - start)
        times[k] = statistics.median(samples)
    ray.kill(idle)
    return (times[n] - times[1]) / (n - 1)


def projection(costs: dict, workers=(1, 2, 8, 64, 512), fan_in: int = 8) -> list[dict]:
    """Round time with W workers, one task each, k = `fan_in` workers per node:
    - flat: T = t_task + t_round + W·(t_submit + t_grad): one driver and one aggregator
      submit and fetch every task serially;
    - tree as built: T = t_task + t_round + W·t_submit + k·t_grad + ⌈W/k⌉·t_root: the
      driver still submits every task, the node sub-aggregators sum their k gradients in
      parallel, and the root steps with one partial sum per node (t_root measured);
    - full tree (modelled, not built): sub-aggregators that also relay θ and the
      submissions pay k·(t_submit + t_grad) per level, ⌈log_k W⌉ levels.
    Efficiency = t_task / T."""
    t_task, t_round, t_submit = costs["t_task_s"], costs["t_round_overhead_s"], costs["t_submit_s"]
    t_grad, t_root = costs["t_grad_s"], costs["t_root_s"]
    rows = []
    for w in workers:
        levels = max(math.ceil(math.log(w, fan_in) - 1e-9), 1)
        times = {
            "flat": t_task + t_round + w * (t_submit + t_grad),
            "tree_built": t_task + t_round + w * t_submit + min(w, fan_in) * t_grad + math.ceil(w / fan_in) * t_root,
            "tree": t_task + t_round + min(w, fan_in) * (t_submit + t_grad) * levels,
        }
        row: dict = {"workers": w}
        for name, t in times.items():
            row[f"{name}_tasks_per_s"], row[f"{name}_efficiency"] = w / t, t_task / t
        rows.append(row)
    return rows


def memory_per_actor(backbone: str, shared: bool) -> tuple[list[dict], float]:
    """Each actor's memory log after one task each, and the weights' MiB (0 if not shared)."""
    data_dir = load_config(ROOT / "configs" / "demo.yaml").data.resolved_dir()
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            f"data.data_dir={data_dir}",
            f"model.backbone={backbone}",
            f"ray.shared_backbone={str(shared).lower()}",
            "meta.eval_every=0",
        ],
    )
    runner = RayRunner(cfg)
    try:
        runner.start(runner.init_prompt())
        runner.round([preflight(cfg).spec(i) for i in range(2)])  # one task per actor
        weights = ray.get(runner.backbone_ref).nbytes / 2**20 if shared else 0.0
        return runner.memory(), weights
    finally:
        runner.shutdown()


def ratios(rates: dict[str, float]) -> dict[str, float]:
    return {
        "1 actor / plain loop": rates["Ray, 1 actor"] / rates["plain loop (no Ray)"],
        "2 actors / 1 actor": rates["Ray, 2 actors"] / rates["Ray, 1 actor"],
    }


def throughput_section(args) -> dict:
    seconds: dict[str, list[float]] = {name: [] for name in RUNS}
    thetas, per_pass = [], []
    for p in range(args.passes):
        rates = {}
        for name, extra in RUNS.items():
            times, theta, b = timed_rounds([*extra, *args.overrides], args.rounds)
            seconds[name] += times
            thetas.append(theta)
            rates[name] = b * len(times) / sum(times)
            print(f"pass {p + 1}, {name}: {rates[name]:.3f} tasks/s (median round {statistics.median(times):.2f} s)")
        per_pass.append(ratios(rates))
        print(f"pass {p + 1}: {per_pass[-1]}", flush=True)
    rates = {name: b * len(times) / sum(times) for name, times in seconds.items()}
    return {
        "tasks_per_round": b,
        "passes": args.passes,
        "tasks_per_s": rates,
        "median_round_s": {name: statistics.median(times) for name, times in seconds.items()},
        "ratios": ratios(rates),
        "ratios_per_pass": per_pass,
        "theta_shape": list(thetas[0].shape),
        "same_theta": all(torch.equal(t, thetas[0]) for t in thetas),
    }


def costs_section(throughput: dict, shape: tuple[int, int]) -> dict:
    b = throughput["tasks_per_round"]
    t_task = throughput["median_round_s"]["plain loop (no Ray)"] / b
    t_round = max(throughput["median_round_s"]["Ray, 1 actor"] - b * t_task, 0.0)  # Ray's per-round overhead
    agg, root = aggregation_cost(shape), aggregation_cost(shape, partials=True)
    counts = sorted(agg)
    t_grad = (agg[counts[-1]] - agg[counts[0]]) / (counts[-1] - counts[0])  # marginal cost per gradient
    t_root = (root[counts[-1]] - root[counts[0]]) / (counts[-1] - counts[0])  # ... per partial sum at the root
    t_submit = dispatch_cost(shape)
    return {
        "t_submit_s": t_submit,
        "t_task_s": t_task,
        "t_round_overhead_s": t_round,
        "aggregation_s": agg,
        "t_grad_s": t_grad,
        "root_aggregation_s": root,
        "t_root_s": t_root,
        "theta_bytes": shape[0] * shape[1] * 4,
        "serial_work_equals_a_task_at_workers": t_task / (t_grad + t_submit),
    }


def print_tables(result: dict) -> None:
    t = result["throughput"]
    print("\n| run | tasks/s |\n|---|---|")
    for name, rate in t["tasks_per_s"].items():
        print(f"| {name} | {rate:.3f} |")
    for name, ratio in t["ratios"].items():
        print(f"| {name} | {ratio:.3f} |")
    print(f"per pass: {t['ratios_per_pass']}")
    print(f"same θ from every run: {t['same_theta']}")
    c = result["costs"]
    print(
        f"\nper task {c['t_task_s']:.2f} s; Ray overhead per round {c['t_round_overhead_s'] * 1e3:.0f} ms; "
        f"per task submitted by the driver {c['t_submit_s'] * 1e3:.2f} ms; "
        f"per pseudo-gradient at the aggregator {c['t_grad_s'] * 1e3:.2f} ms "
        f"({', '.join(f'{n}: {s * 1e3:.1f} ms' for n, s in c['aggregation_s'].items())}); "
        f"per partial sum at the tree's root {c['t_root_s'] * 1e3:.2f} ms; "
        f"θ and each g_i {c['theta_bytes'] / 1024:.0f} KiB"
    )
    print("\n| workers | flat: tasks/s | efficiency | tree as built | efficiency | full tree (model) | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for row in result["projection"]:
        cells = [
            f"{row[f'{n}_tasks_per_s']:.1f} | {row[f'{n}_efficiency']:.0%}" for n in ("flat", "tree_built", "tree")
        ]
        print(f"| {row['workers']} | " + " | ".join(cells) + " |")
    if "memory" in result:
        print("\n| backbone | weights MiB | mode | actor | USS before load | + at load | + after a task | shared MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for row in result["memory"]:
            print(
                f"| {row['backbone']} | {row['weights_mib']:.0f} | {row['mode']} | {row['actor']} "
                f"| {row['uss_before']:.0f} | {row['load_mib']:+.0f} | {row['after_task_mib']:+.0f} "
                f"| {row['shared_mib']:.0f} |"
            )


def memory_section() -> list[dict]:
    rows = []
    for label, backbone in BACKBONES.items():
        weights = 0.0
        for mode in ("shared", "private"):
            actors, w = memory_per_actor(backbone, mode == "shared")
            weights = w or weights
            for i, m in enumerate(actors):
                before = m["before_backbone"]["uss"]
                rows.append(
                    {
                        "backbone": label,
                        "mode": mode,
                        "actor": i + 1,
                        "weights_mib": weights,
                        "uss_before": before,
                        "load_mib": m["after_backbone"]["uss"] - before,
                        "after_task_mib": m["now"]["uss"] - before,
                        "shared_mib": m["now"]["shared"],
                        "log": m,
                    }
                )
                print(f"{label} {mode} actor {i + 1}: {rows[-1]['load_mib']:+.0f} MiB at load", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaling.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    throughput = throughput_section(args)
    costs = costs_section(throughput, tuple(throughput["theta_shape"]))
    result = {
        "rounds": args.rounds,
        "passes": args.passes,
        "throughput": throughput,
        "costs": costs,
        "projection": projection(costs),
    }
    if not args.skip_memory:
        result["memory"] = memory_section()
    print_tables(result)
    write_result(result, args.out, "python " + shlex.join(sys.argv))


if __name__ == "__main__":
    main()
