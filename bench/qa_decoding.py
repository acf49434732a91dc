"""bench/qa_decoding: how a QA θ's answers are read out, paired on the same episodes.

    python bench/qa_decoding.py --checkpoint runs/scale-qa/points/round-000080
    python bench/qa_decoding.py --checkpoint RUN --variants greedy span span-320

On configs/squad.yaml's evaluation (the 10 held-out XQuAD articles, 4 support questions,
every other question a query; `--episodes` 30: 3 support draws per article), the
instruction and the checkpoint's θ (as the reptile method), F1 and EM at 0 and 4 steps
(eval.inner.lr 0.03, bench/qa's choice on meta-val for Reptile on SQuAD), under each
variant's model settings:

- greedy: the most likely token at each step (the default);
- span: the most likely token that keeps the answer a span of its context
  (`model.answer_decoding=span`);
- span-320: span, and the first 320 context tokens read instead of 192
  (`model.max_context_tokens=320`): 6.6% of the held-out answers end past token 192.

Each variant is paired per episode with greedy. Writes bench/results/qa-decoding.json.
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
from metaray.distributed import make_runner
from metaray.eval import evaluate, paired_difference, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "squad.yaml"
VARIANTS = {
    "greedy": [],
    "span": ["model.answer_decoding=span"],
    "span-320": ["model.answer_decoding=span", "model.max_context_tokens=320"],
}
METHODS = ("instruction", "reptile")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True, help="the θ to read (run folder or round folder)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--out", default="qa-decoding.json", help="file name under bench/results/")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every variant")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    common = [
        f"eval.checkpoints={{reptile: {args.checkpoint}}}",
        f"eval.methods=[{','.join(METHODS)}]",
        f"eval.episodes={args.episodes}",
        "eval.inner.lr=0.03",
        *args.overrides,
    ]
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    cells, seconds = {}, {}
    for variant in ["greedy", *(v for v in args.variants if v != "greedy")]:
        cfg = load_config(CONFIG, [*common, *VARIANTS[variant]])
        runner = make_runner(cfg)  # a runner is one model: each variant its own actors
        start = time.perf_counter()
        try:
            result = evaluate(cfg, runner)
        finally:
            runner.shutdown()
        seconds[variant] = time.perf_counter() - start
        [(shots, rows)] = result["settings"].items()
        cells[variant] = {m: rows[m]["heads"] for m in METHODS}
        print(f"[qa_decoding] {variant} ({shots}): {summary(cells[variant])}", flush=True)
    out = {"checkpoint": args.checkpoint, "episodes": args.episodes, "seconds": seconds, "variants": {}}
    for variant, heads in cells.items():
        out["variants"][variant] = {
            method: {
                head: {
                    step: {
                        "mean": cell["mean"],
                        "ci95": cell["ci95"],
                        "vs_greedy": paired_difference(cell, cells["greedy"][method][head][step]),
                    }
                    for step, cell in by_step.items()
                }
                for head, by_step in heads[method].items()
                if head in ("f1", "em")
            }
            for method in METHODS
        }
    write_result(out, ROOT / "bench" / "results" / args.out, command)
    print(json.dumps(out["variants"], indent=1), flush=True)


def summary(heads: dict) -> str:
    return "; ".join(
        f"{method} {head} " + " / ".join(f"{step}: {c['mean']:.1f} ± {c['ci95']:.1f}" for step, c in cells.items())
        for method, by_head in heads.items()
        for head, cells in by_head.items()
        if head in ("f1", "em")
    )


if __name__ == "__main__":
    main()
