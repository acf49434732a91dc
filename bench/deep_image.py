"""bench/deep_image: the deep visual prompt against the pixel prompt, meta-trained on the
full Omniglot background set (frozen EfficientNet-Lite0).

    python bench/deep_image.py                 # train both depths, then evaluate (~60 min on 2 cores)
    python bench/deep_image.py --skip-train    # evaluate the runs/deep-image-* checkpoints again

1. meta-train with first-order MAML (Adam outer step, 0.005) on 5-way 1-shot tasks of the
   23 meta-train alphabets of configs/omniglot-background.yaml (their characters turned
   90/180/270 degrees as classes of their own), selecting θ on the 2 meta-val alphabets,
   once per prompt depth: 1 (pixels on the whole image) and 8 (the pixels and a map
   after each of EfficientNet-Lite0's 7 stages); the same tasks for both;
2. on the 5 held-out alphabets, 5-way and 20-way 1-shot episodes (5 queries per class):
   frozen-feature ProtoNet and linear probe, the prompt from its initialisation (random
   pixels, zero maps) and the meta-learned one, each depth on the same episodes; both heads
   (prototypes, the linear probe) at the budget `--steps` (default 0: the meta-learned
   init as it is, which meta-validation selects on).
Prints each table and the paired differences per episode (depth 8 − depth 1; the best
meta-learned head − ProtoNet), and writes bench/results/deep_image.json.
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
from metaray.eval import evaluate, format_table, paired_difference, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "omniglot-background.yaml"
DEPTHS = (1, 8)
TRAIN = ["meta.algorithm=fomaml", "meta.outer_optimizer=adam", "meta.outer_lr=0.005"]
SETTINGS = {"5-way 1-shot": ["eval.n_way=5"], "20-way 1-shot": ["eval.n_way=20"]}


def run_dir(depth: int) -> str:
    return f"runs/deep-image-depth{depth}"


def compare(cells: dict[int, dict], steps: str) -> dict:
    """Paired differences over the same episodes: depth 8 − depth 1 per head (the
    meta-learned prompt, and the prompt at its init), and each depth's best head − ProtoNet."""
    shallow, deep = cells[DEPTHS[0]], cells[DEPTHS[-1]]
    out: dict = {}
    for method in ("fomaml", "random"):
        for head in ("proto", "probe"):
            a, b = deep[method]["heads"][head][steps], shallow[method]["heads"][head][steps]
            out[f"{method} {head}: depth {DEPTHS[-1]} - depth {DEPTHS[0]}"] = paired_difference(a, b)
    protonet = shallow["protonet"]["heads"]["proto"]["0"]
    for depth, methods in cells.items():
        best = max(methods["fomaml"]["heads"].values(), key=lambda by_step: by_step[steps]["mean"])
        out[f"fomaml depth {depth} (best head) - protonet"] = paired_difference(best[steps], protonet)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--rounds", type=int, default=160, help="meta-training rounds (4 tasks each)")
    parser.add_argument("--episodes", type=int, default=200, help="held-out episodes per setting")
    parser.add_argument("--steps", type=int, default=0, help="prompt adaptation steps at test")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    path = ROOT / "bench" / "results" / "deep_image.json"
    common = [*TRAIN, f"meta.rounds={args.rounds}", *args.overrides]
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    previous = json.loads(path.read_text()) if args.skip_train and path.is_file() else {}
    out: dict = {"training": previous.get("training", {}), "evaluations": {}}
    for depth in DEPTHS:
        cfg = load_config(CONFIG, [*common, f"prompt.depth={depth}", f"output.dir={run_dir(depth)}"])
        if not args.skip_train:
            start = time.perf_counter()
            summary = train(cfg)
            out["training"][depth] = {**summary, "seconds": time.perf_counter() - start}
            print(f"[train] depth {depth}: {out['training'][depth]}", flush=True)
    steps = str(args.steps)
    for name, extra in SETTINGS.items():
        cells, tables = {}, []
        for depth in DEPTHS:
            methods = ["random", "fomaml"] + (["protonet", "linear_probe"] if depth == DEPTHS[0] else [])
            cfg = load_config(
                CONFIG,
                [*common, f"prompt.depth={depth}", f"eval.checkpoints.fomaml={run_dir(depth)}", *extra]
                + [f"eval.methods=[{','.join(methods)}]", f"eval.episodes={args.episodes}", f"eval.steps=[{steps}]"],
            )
            start = time.perf_counter()
            result = evaluate(cfg)
            cells[depth] = result["settings"][name]
            tables.append(f"depth {depth} ({time.perf_counter() - start:.0f} s)\n{format_table(result)}")
        found = compare(cells, steps)
        out["evaluations"][name] = {"steps": args.steps, "episodes": args.episodes, "by_depth": cells, "paired": found}
        print(f"\n## {name}\n" + "\n\n".join(tables), flush=True)
        for label, diff in found.items():
            print(f"  {label}: {diff['mean']:+.2f} ± {diff['ci95']:.2f} (n={diff['n']})", flush=True)
        write_result(out, path, command)


if __name__ == "__main__":
    main()
