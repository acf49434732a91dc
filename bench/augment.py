"""bench/augment: each text edit's effect on BANKING77 at 1, 5 and 10 shots, and on QA F1.

    python bench/augment.py                      # every edit, both methods (~30 min, 2 cores)
    python bench/augment.py --edits none dropout --checkpoint runs/hm-r2d2-noconsistency
    python bench/augment.py eval.inner.lr=0.03 --kind qa   # QA: bench/qa's SQuAD Reptile θ

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

`--kind qa`: configs/squad.yaml's 10 held-out XQuAD articles (4 support questions, all
the others as queries), the Reptile θ of `python bench/qa.py --config configs/squad.yaml`
adapted 4 steps (at the `eval.inner.lr` given; bench/qa chooses it on meta-val), its
support loss on the questions and their edited copies; SQuAD F1 paired per article.
Writes bench/results/augment-qa.json.
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
from metaray.distributed import make_runner
from metaray.eval import evaluate, format_table, paired_difference, write_result

ROOT = Path(__file__).resolve().parents[1]
EDITS = {
    "none": {},
    "dropout": {"token_dropout": 0.2},
    "span": {"span_deletion": 0.3},
    "swaps": {"word_swaps": 2},
    "synonyms": {"synonyms": 0.2},
    "all": {"token_dropout": 0.1, "span_deletion": 0.2, "word_swaps": 1},
}
KINDS = {  # config, setting, methods, the θ's method and default checkpoint, the head compared
    "classify": (CONFIG, ["eval.shots=[1, 5, 10]", "eval.steps=[0, 5]"], "linear_probe, r2d2", "r2d2",
                 "runs/hm-r2d2-noconsistency", "probe", "augment.json"),
    "qa": (ROOT / "configs" / "squad.yaml", ["eval.steps=[4]"], "reptile", "reptile", "runs/squad-reptile", "f1",
           "augment-qa.json"),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=list(KINDS), default="classify")
    parser.add_argument("--edits", nargs="*", default=list(EDITS), choices=list(EDITS))
    parser.add_argument("--views", type=int, default=2, help="edited copies per support example")
    parser.add_argument("--checkpoint", help="the meta-learned θ (default: the kind's bench run)")
    parser.add_argument("--out", help="the JSON (default: bench/results/augment.json, augment-qa.json for qa)")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    config, setting, methods, learned, checkpoint, head, name = KINDS[args.kind]
    checkpoint = args.checkpoint or checkpoint
    path = Path(args.out or ROOT / "bench" / "results" / name)
    out: dict = json.loads(path.read_text()) if path.is_file() else {}
    out.update(kind=args.kind, views=args.views, checkpoint=checkpoint)
    out["edits"] = {**out.get("edits", {}), **{n: EDITS[n] for n in args.edits}}  # beside an earlier run's
    out.setdefault("results", {})
    methods = f"eval.methods=[{methods}]", f"eval.checkpoints={{{learned}: {checkpoint}}}"
    base = load_config(config, [*setting, *methods, *args.overrides])
    if not base.ray.local:  # ray.local=true: in this process, no Ray
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    runner = make_runner(base)
    try:
        for name in args.edits:
            copies = [f"eval.inner.views={args.views}"] if EDITS[name] else []
            edits = [f"eval.inner.augment.{key}={value}" for key, value in EDITS[name].items()]
            cfg = load_config(config, [*setting, *methods, *copies, *edits, *args.overrides])
            start = time.perf_counter()
            result = evaluate(cfg, runner)
            out["results"][name] = {**result, "seconds": time.perf_counter() - start}
            print(f"\n## {name} {EDITS[name]}\n{format_table(result)}", flush=True)
            if "none" in out["results"]:
                out["vs_none"] = {n: against_none(out["results"], n, head) for n in out["results"] if n != "none"}
            write_result(out, path, command)
    finally:
        runner.shutdown()
    for name, by_shots in out.get("vs_none", {}).items():
        for shots, cells in by_shots.items():
            diffs = ", ".join(f"{cell}: {d['mean']:+.2f} ± {d['ci95']:.2f}" for cell, d in cells.items())
            print(f"{name} {shots} - none: {diffs}")


def against_none(results: dict, name: str, head: str) -> dict:
    """Per shot setting, per method and budget: `head`'s score (the probe head's accuracy,
    QA's F1) with the edits minus without, paired per support draw."""
    out = {}
    for shots, rows in results[name]["settings"].items():
        base = results["none"]["settings"][shots]
        out[shots] = {
            f"{method} {step}": paired_difference(cell, base[method]["heads"][head][step])
            for method, row in rows.items()
            for step, cell in row["heads"][head].items()
        }
    return out


if __name__ == "__main__":
    main()
