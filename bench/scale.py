"""bench/scale: held-out accuracy against the number of meta-training tasks seen.

    python bench/scale.py                          # points 0 160 640 2560 (~2 h on 2 cores)
    python bench/scale.py --points 0 160 640       # stop earlier; a later call with more points
                                                   # resumes the same run (bit-identical) and adds them
    python bench/scale.py --kind image             # images: bench/deep_image's FOMAML, depth 8

The method is the one bench/headmatched selects on meta-validation: r2d2 without the
consistency term (configs/intents-r2d2.yaml with meta.consistency=0: CLINC150 7 domains +
SNIPS + two HINT3 bots + TREC, 16/32/48-way 2+2-shot tasks, meta-validated on the held-out
HINT3 sofmattress bot every 20 rounds). One run goes from 0 to the largest point; at each
point it stops, and θ is evaluated two ways: `selected` (the best meta-validation θ so
far, what `metaray eval` reads) and `last` (the θ after exactly that many tasks). Point 0
is θ₀, the vocabulary init meta-training starts from.

Settings (as bench/headmatched; BANKING77 is never used for meta-training or selection):
banking77-full (77-way 5- and 10-shot, 3 support draws x 770 queries), banking77-5way and
clinc150-within (5-way 1-shot, `--episodes` episodes). Each θ is scored with the probe
head at 0 prompt steps (the budget meta-validation scores), paired per task with the
linear probe on the same tasks. Every point records the cumulative meta-training
wall-clock, the actors, and the tasks per hour; the JSON's `projection` converts the
x-axis to hours for larger clusters with bench/results/scaling.json's efficiencies.
Writes bench/results/scale.json and bench/results/scale.png after each point.

`--kind image`: bench/deep_image's method, FOMAML (Adam outer step 0.005) on
configs/omniglot-background.yaml (the deep visual prompt, depth 8; 5-way 1-shot tasks of
the 23 meta-train alphabets with rotations), meta-validated on its 2 alphabets every 20
rounds; scored on the 5 held-out alphabets, 5-way and 20-way 1-shot (`--episodes`
episodes each, 5 queries per class), the probe head at 0 steps, paired per episode with
the linear probe on the frozen features. Point 0 is the prompt at its init (random
pixels, zero maps). Writes bench/results/scale-image.json and .png.

`--kind qa`: Reptile on configs/squad.yaml (a task is one SQuAD dev article outside both
XQuAD held-out splits, 4 + 4 questions), meta-validated on XQuAD's 6 val articles every 8
rounds; scored on the 10 held-out XQuAD articles, 4 support questions and every other
question as a query, F1 and EM (max over the references) of the greedy answers at 0 steps,
paired per episode with the hand-written instruction; `--episodes` 30 (3 support draws
per article). θ₀ is the prompt initialised from the instruction's text. Writes
bench/results/scale-qa.json and .png.

Each point's selected and last θ are copied to RUN/points/round-NNNNNN, out of reach of
the run's `output.keep_last` pruning.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import deep_image
import headmatched
import ray

from metaray.checkpoint import load_checkpoint, resolve_checkpoint
from metaray.config import load_config
from metaray.distributed import RayRunner, train
from metaray.eval import evaluate, machine_description, paired_difference, write_result
from metaray.plots import figure, png

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Curve:
    """One kind's curve: its config and training overrides, the meta-learned method (and
    θ₀'s eval method), the held-out settings, and where the run and the results go."""

    label: str
    config: Path
    train: tuple[str, ...]
    method: str
    init: str
    settings: dict[str, list[str]]
    run: str
    out: str
    baseline: str = "linear_probe"
    heads: tuple[str, ...] = ("probe",)
    episodes: int = 200


CURVES = {
    "classify": Curve(
        "r2d2 (meta.consistency=0)",
        headmatched.CONFIG,
        ("meta.consistency=0", "meta.eval_every=20"),
        "r2d2",
        "vocab",
        headmatched.SETTINGS,
        "runs/scale-r2d2",
        "scale.json",
    ),
    "image": Curve(
        "fomaml, prompt.depth 8 (bench/deep_image)",
        deep_image.CONFIG,
        (*deep_image.TRAIN, "meta.eval_every=20"),
        "fomaml",
        "random",
        deep_image.SETTINGS,
        "runs/scale-image",
        "scale-image.json",
    ),
    "qa": Curve(
        "reptile (configs/squad.yaml)",
        ROOT / "configs" / "squad.yaml",
        ("meta.algorithm=reptile", "output.keep_last=2"),
        "reptile",
        "text",
        {"xquad-test 4-shot": []},
        "runs/scale-qa",
        "scale-qa.json",
        baseline="instruction",
        heads=("f1", "em"),
        episodes=30,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=list(CURVES), default="classify")
    parser.add_argument("--points", nargs="*", type=int, default=[0, 160, 640, 2560], help="meta-training tasks seen")
    parser.add_argument("--settings", nargs="*", help="the held-out settings (default: all of the kind's)")
    parser.add_argument("--episodes", type=int, help="episodes of the episodic settings (200; qa: 30)")
    parser.add_argument("--run", help="the meta-training run folder (default: the kind's)")
    parser.add_argument("--out", help="the JSON (default: bench/results/scale.json, scale-image.json, scale-qa.json)")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    curve = CURVES[args.kind]
    args.curve, args.run = curve, args.run or curve.run
    args.episodes = args.episodes or curve.episodes
    args.settings = args.settings or list(curve.settings)
    unknown = set(args.settings) - set(curve.settings)
    if unknown:
        parser.error(f"--settings {sorted(unknown)}: the {args.kind} curve has {list(curve.settings)}")
    path = Path(args.out or RESULTS / curve.out)
    out: dict = json.loads(path.read_text()) if path.is_file() else {}
    out.update(method=curve.label, train_overrides=list(curve.train), run=args.run)
    out.setdefault("baseline", {})
    out.setdefault("points", {})
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    for setting in args.settings:
        if setting not in out["baseline"]:
            out["baseline"][setting] = score(args, setting, curve.baseline, None)
            write_result(out, path, command)
    for n in sorted(args.points):
        if str(n) in out["points"]:
            continue
        point = {"tasks": n, **meta_train(args, n, out)}
        thetas = {"selected": args.curve.init} if n == 0 else checkpoints(args.run)
        point["theta"] = thetas
        point["settings"] = {}
        for setting in args.settings:
            scored = {}
            for which, theta in thetas.items():
                reuse = next((w for w in scored if thetas[w] == theta), None)
                scored[which] = scored[reuse] if reuse else score(args, setting, *method_of(args.curve, theta))
            baseline = out["baseline"][setting]
            point["settings"][setting] = {w: summarise(curve, cell, baseline) for w, cell in scored.items()}
        out["points"][str(n)] = point
        out["projection"] = projection(out)
        write_result(out, path, command)
        path.with_suffix(".png").write_bytes(plot(out, curve.baseline))
        print(f"[scale] {n} tasks: {json.dumps(point['settings'], indent=1)}", flush=True)


def meta_train(args, n: int, out: dict) -> dict:
    """Continue the run to n tasks (from its latest checkpoint); the segment's wall-clock
    and the cumulative meta-training time to this point."""
    curve = args.curve
    cfg = load_config(curve.config, [*curve.train, f"output.dir={args.run}", *args.overrides])
    b = cfg.meta.meta_batch_size
    if n % b:
        raise SystemExit(f"--points: {n} is not a multiple of meta.meta_batch_size={b}")
    done = int(load_checkpoint(args.run, "latest")[1]["round"]) if n and (Path(args.run) / "latest").is_file() else 0
    if done * b > n:
        raise SystemExit(f"{args.run} is already at {done * b} tasks, past the point {n}: pass a fresh --run")
    seconds = 0.0
    if n > done * b:
        rounds = f"meta.rounds={n // b}"
        cfg = load_config(curve.config, [*curve.train, f"output.dir={args.run}", rounds, *args.overrides])
        start = time.perf_counter()
        train(cfg, resume=done > 0)
        seconds = time.perf_counter() - start
    # the time to reach `done`: a fresh run (runs/ lost) starts again from point 0's zero
    before = max((p["train_seconds_total"] for p in out["points"].values() if p["tasks"] <= done * b), default=0.0)
    trained = n - done * b
    return {
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d"),
        "actors": cfg.ray.num_actors,
        "segment_tasks": trained,
        "segment_seconds": seconds,
        "tasks_per_hour": 3600 * trained / seconds if seconds else None,
        "train_seconds_total": before + seconds,
    }


def checkpoints(run: str) -> dict[str, str]:
    """The selected and the last θ, copied to run/points/ so that the run's
    `output.keep_last` pruning cannot delete them once it goes on."""
    pinned = {}
    for which, pointer in (("selected", "best"), ("last", "latest")):
        source = Path(resolve_checkpoint(run, pointer))
        target = Path(run) / "points" / source.name
        if not target.is_dir():
            shutil.copytree(source, target)
        pinned[which] = str(target)
    return pinned


def method_of(curve: Curve, theta: str) -> tuple[str, str | None]:
    """(eval method, checkpoint): θ₀ is the curve's init method, anything else a checkpoint."""
    return (curve.init, None) if theta == curve.init else (curve.method, theta)


def score(args, setting: str, method: str, checkpoint: str | None) -> dict:
    """One method's probe-head cells at 0 steps, per shot setting, on `setting`'s tasks."""
    chosen = [f"eval.methods=[{method}]", "eval.steps=[0]"]
    if checkpoint:
        chosen.append(f"eval.checkpoints={{{method}: {checkpoint}}}")
    extra = [*args.curve.settings[setting], f"eval.episodes={args.episodes}", *chosen, *args.overrides]
    cfg = load_config(args.curve.config, extra)
    runner = RayRunner(cfg)
    try:
        result = evaluate(cfg, runner)
    finally:
        runner.shutdown()
    heads = args.curve.heads
    return {
        shots if len(heads) == 1 else f"{shots} {head}": rows[method]["heads"][head]["0"]
        for shots, rows in result["settings"].items()
        for head in heads
    }


def summarise(curve: Curve, cells: dict, baseline: dict) -> dict:
    """Per shot setting (and head): the mean score and its paired difference to the
    curve's baseline (`vs_linear_probe`, `vs_instruction`)."""
    return {
        shots: {"mean": c["mean"], "ci95": c.get("ci95"), f"vs_{curve.baseline}": paired_difference(c, baseline[shots])}
        for shots, c in cells.items()
    }


def projection(out: dict) -> dict:
    """Hours to each point for N actors at this run's measured rate per actor, with the
    flat aggregator's efficiency from bench/results/scaling.json (1 where not measured)."""
    points = [p for p in out["points"].values() if p["segment_seconds"]]
    seconds = sum(p["segment_seconds"] for p in points)
    if not seconds:
        return {}
    actors = points[-1]["actors"]
    per_actor = sum(p["segment_tasks"] for p in points) / seconds / actors
    scaling = RESULTS / "scaling.json"
    rows = json.loads(scaling.read_text()).get("projection", []) if scaling.is_file() else []
    efficiency = {int(r["workers"]): r["flat_efficiency"] for r in rows}
    hours = {}
    for workers in (actors, 8, 64, 512):
        rate = per_actor * workers * efficiency.get(workers, 1.0)
        hours[str(workers)] = {str(n): int(n) / rate / 3600 for n in out["points"]}
    return {"tasks_per_s_per_actor": per_actor, "hours_by_actors": hours}


def plot(out: dict, baseline: str) -> bytes:
    """Per setting: the paired difference to the baseline (95% interval) against the
    tasks seen, for the selected and the last θ; the hours of meta-training on the top axis."""
    points = sorted(out["points"].values(), key=lambda p: p["tasks"])
    settings = list(points[0]["settings"])
    fig, axes = figure(len(settings), width=4.6)
    for ax, setting in zip(axes, settings, strict=True):
        for shots in points[0]["settings"][setting]["selected"]:
            for which, style in (("selected", "-"), ("last", "--")):
                xs, ys, es = [], [], []
                for p in points:
                    cell = p["settings"][setting].get(which, p["settings"][setting]["selected"])[shots]
                    xs.append(p["tasks"])
                    ys.append(cell[f"vs_{baseline}"]["mean"])
                    es.append(cell[f"vs_{baseline}"]["ci95"])
                ax.errorbar(xs, ys, yerr=es, linestyle=style, marker="o", capsize=3, label=f"{shots} ({which})")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xscale("symlog", linthresh=160)
        ax.set_xticks([p["tasks"] for p in points])
        ax.set_xticklabels(
            [f"{tasks_label(p['tasks'])}\n{p['train_seconds_total'] / 3600:.1f} h" for p in points], fontsize=7
        )
        ax.set_xlabel("meta-training tasks seen (and hours, 2 actors)")
        ax.set_ylabel(f"score − {baseline.replace('_', ' ')} (points, 95% interval)")
        ax.set_title(setting, fontsize=10)
        ax.legend(fontsize=6, loc="best")
    return png(fig)


def tasks_label(n: int) -> str:
    """160, 640, 2.6k: short enough that neighbouring points on a log axis do not overlap."""
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


if __name__ == "__main__":
    main()
