"""bench/augment: each text edit's effect on BANKING77 at 1, 5 and 10 shots.

    python bench/augment.py                      # every edit, both methods (~30 min, 2 cores)
    python bench/augment.py --edits none dropout --checkpoint runs/hm-r2d2-noconsistency

BANKING77's full protocol (77-way, 3 support draws from the train file, 10 test queries
per class), each edit (`eval.inner.augment`, 2 edited copies per support example:
`eval.inner.views=2`) against none, for two methods on the same tasks:
- linear_probe: the frozen encoder's embeddings, the head fitted on the support and its
  copies;
- r2d2: the meta-learned θ of `--checkpoint` (bench/headmatched's r2d2 without the
  consistency term by default), the probe head fitted the same way, at 0 prompt steps
  (the copies feed the head only) and after 5 steps (they also make the inner loop's
  support loss: copies scored against the originals, instead of leave-one-out).
Every cell is paired per draw with the same method and budget without edits (mean and
Student-t 95% interval of the difference). Writes bench/results/augment.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import ray
from headmatched import CONFIG

from metaray.config import load_config
from metaray.distributed import RayRunner
from metaray.eval import evaluate, format_table, paired_difference, write_result

ROOT = Path(__file__).resolve().parents[1]
EDITS = {
    "none": {},
    "dropout": {"token_dropout": 0.2},
    "span": {"span_deletion": 0.3},
    "swaps": {"word_swaps": 2},
    "all": {"token_dropout": 0.1, "span_deletion": 0.2, "word_swaps": 1},
}
SETTING = ["eval.shots=[1, 5, 10]", "eval.steps=[0, 5]"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", nargs="*", default=list(EDITS), choices=list(EDITS))
    parser.add_argument("--views", type=int, default=2, help="edited copies per support example")
    parser.add_argument("--checkpoint", default="runs/hm-r2d2-noconsistency", help="the r2d2 θ")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "augment.json"))
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    path = Path(args.out)
    out: dict = json.loads(path.read_text()) if path.is_file() else {}
    out.update(views=args.views, checkpoint=args.checkpoint, edits={n: EDITS[n] for n in args.edits})
    out.setdefault("results", {})
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    methods = "eval.methods=[linear_probe, r2d2]", f"eval.checkpoints={{r2d2: {args.checkpoint}}}"
    runner = RayRunner(load_config(CONFIG, [*SETTING, *methods, *args.overrides]))
    try:
        for name in args.edits:
            copies = [f"eval.inner.views={args.views}"] if EDITS[name] else []
            edits = [f"eval.inner.augment.{key}={value}" for key, value in EDITS[name].items()]
            cfg = load_config(CONFIG, [*SETTING, *methods, *copies, *edits, *args.overrides])
            start = time.perf_counter()
            result = evaluate(cfg, runner)
            out["results"][name] = {**result, "seconds": time.perf_counter() - start}
            print(f"\n## {name} {EDITS[name]}\n{format_table(result)}", flush=True)
            if "none" in out["results"]:
                out["vs_none"] = {n: against_none(out["results"], n) for n in out["results"] if n != "none"}
            write_result(out, path, command)
    finally:
        runner.shutdown()
    for name, by_shots in out.get("vs_none", {}).items():
        for shots, cells in by_shots.items():
            diffs = ", ".join(f"{cell}: {d['mean']:+.2f} ± {d['ci95']:.2f}" for cell, d in cells.items())
            print(f"{name} {shots} - none: {diffs}")


def against_none(results: dict, name: str) -> dict:
    """Per shot setting, per method and budget: the probe head's accuracy with the edits
    minus without, paired per support draw."""
    out = {}
    for shots, rows in results[name]["settings"].items():
        base = results["none"]["settings"][shots]
        out[shots] = {
            f"{method} {step}": paired_difference(cell, base[method]["heads"]["probe"][step])
            for method, row in rows.items()
            for step, cell in row["heads"]["probe"].items()
        }
    return out


if __name__ == "__main__":
    main()
