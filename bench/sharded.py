"""bench/sharded: memory per worker and time per meta-round, DeepSpeed ZeRO-3 against unsharded.

    python bench/sharded.py [--rounds 3] [--out FILE] [overrides ...]

The same meta-training rounds (configs/sharded.yaml: SmolLM2-135M, W = 2, same tasks
and seeds) four ways:
  - sharded: DeepSpeed ZeRO-3 under Ray Train, each worker holds 1/W of the backbone;
  - unsharded: 2 Ray actors, each with its own whole copy of the backbone;
  - unsharded, shared: 2 Ray actors mapping one copy from the object store (one node only);
  - sharded with DeepSpeed's speed settings: small tensors kept whole, layers prefetched.
Per worker: peak resident memory (VmHWM, over the worker's life, load included; it
counts mapped file pages), unique memory (USS) after the rounds, and the USS that
loading (or partitioning) the backbone added; per round: seconds, after one warm-up.
The GGUF backbone is converted to safetensors once before timing (sharded mode builds
it partitioned from that copy) and the conversion time is reported on its own.
Writes bench/results/sharded.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import ray
import torch

from metaray.config import load_config
from metaray.distributed import make_runner, preflight
from metaray.distributed.zero import converted_gguf
from metaray.eval import write_result

ROOT = Path(__file__).resolve().parents[1]
SHARDED, PRIVATE = "sharded (ZeRO-3, W=2)", "unsharded (2 actors, private copies)"
MODES = {
    SHARDED: ["sharded.enabled=true"],
    PRIVATE: ["sharded.enabled=false", "ray.num_actors=2", "ray.shared_backbone=false"],
    "unsharded (2 actors, object-store copy)": ["sharded.enabled=false", "ray.num_actors=2"],
    # Faster, more memory: small tensors (norms, biases) stay whole, the next layers are gathered ahead.
    "sharded, prefetching (persistence 1e5, prefetch 5e7)": [
        "sharded.enabled=true",
        "sharded.persistence_threshold=100000",
        "sharded.prefetch_elements=50000000",
    ],
}


def run_mode(overrides: list[str], rounds: int) -> dict:
    cfg = load_config(ROOT / "configs" / "sharded.yaml", ["meta.eval_every=0", "output.tensorboard=false", *overrides])
    sampler, b = preflight(cfg), cfg.meta.meta_batch_size
    start = time.perf_counter()
    runner = make_runner(cfg)
    try:
        runner.start(runner.init_prompt())
        runner.round([sampler.spec(i) for i in range(b)])  # warm-up
        startup = time.perf_counter() - start
        seconds = []
        for r in range(1, rounds + 1):
            t = time.perf_counter()
            runner.round([sampler.spec(r * b + i) for i in range(b)])
            seconds.append(time.perf_counter() - t)
        memory = runner.memory()
        theta = runner.meta_prompt()
    finally:
        runner.shutdown()
        ray.shutdown()  # each mode starts its own Ray: no worker outlives its mode
    return {
        "startup_and_warmup_s": startup,
        "round_s": seconds,
        "round_s_mean": statistics.mean(seconds),
        "peak_rss_mib": [m["now"]["peak_rss"] for m in memory],
        "uss_mib": [m["now"]["uss"] for m in memory],
        "backbone_load_uss_mib": [m["after_backbone"]["uss"] - m["before_backbone"]["uss"] for m in memory],
        "theta": theta,
    }


def print_table(result: dict) -> None:
    print(f"\nbench/sharded, {result['machine']}, {result['date']}")
    print("| mode | peak RSS / worker (MiB) | USS / worker after (MiB) | of it, loading the backbone | s / round |")
    print("|---|---|---|---|---|")
    for name, row in result["modes"].items():
        peak = " / ".join(f"{v:.0f}" for v in row["peak_rss_mib"])
        uss = " / ".join(f"{v:.0f}" for v in row["uss_mib"])
        load = " / ".join(f"{v:.0f}" for v in row["backbone_load_uss_mib"])
        print(f"| {name} | {peak} | {uss} | {load} | {row['round_s_mean']:.2f} |")
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.2f}")
    print(f"max |θ_sharded − θ_unsharded| after {result['rounds'] + 1} rounds: {result['max_theta_diff']:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sharded.json"))
    args, overrides = parser.parse_known_args()
    cfg = load_config(ROOT / "configs" / "sharded.yaml", overrides)
    start = time.perf_counter()
    converted_gguf(cfg.model, cfg.kind, converter=True, barrier=lambda: None)
    conversion = time.perf_counter() - start
    modes = {name: run_mode([*overrides, *extra], args.rounds) for name, extra in MODES.items()}
    sharded, private = modes[SHARDED], modes[PRIVATE]
    thetas = [row.pop("theta") for row in modes.values()]
    result = {
        "rounds": args.rounds,
        "gguf_conversion_s": conversion,
        "modes": modes,
        "ratios": {
            "peak RSS per worker, sharded / unsharded": max(sharded["peak_rss_mib"]) / max(private["peak_rss_mib"]),
            "USS per worker, sharded / unsharded": max(sharded["uss_mib"]) / max(private["uss_mib"]),
            "time per round, sharded / unsharded": sharded["round_s_mean"] / private["round_s_mean"],
        },
        "max_theta_diff": max(float((t - thetas[0]).abs().max()) for t in thetas),
        "gpu": "not run: no GPU on this machine" if not torch.cuda.is_available() else "see configs/sharded-gpu.yaml",
    }
    command = "python " + shlex.join(["bench/sharded.py", *sys.argv[1:]])
    write_result(result, args.out, command)
    print_table(json.loads(Path(args.out).read_text()))


if __name__ == "__main__":
    main()
