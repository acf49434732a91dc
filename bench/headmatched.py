"""bench/headmatched: the head-matched meta-objective (R2-D2) against the linear probe on
intent data never seen in meta-training, with paired differences per support draw.

    python bench/headmatched.py                          # train every variant, then evaluate (~80 min, 2 cores)
    python bench/headmatched.py --skip-train --episodes 50   # re-evaluate the runs/hm-* checkpoints
    python bench/headmatched.py --variants r2d2-deep         # one variant; the others' cells are kept
    python bench/headmatched.py --backbone all-mpnet-base-v2 --variants r2d2-noconsistency  # another backbone

Variants (configs/intents-r2d2.yaml: CLINC150 7 domains + SNIPS + HINT3 curekart and
powerplay11 + TREC, 16/32/48-way 2+2-shot tasks, selected on the HINT3 sofmattress bot):
- r2d2: the query loss through a ridge head fitted on each task's support in closed form,
  plus the consistency term (weight 1);
- r2d2-noconsistency: the same without the consistency term;
- multitask: the same data and consistency term, the query scored by prototypes (what
  the head-matched objective replaces);
- r2d2-deep: r2d2 with a deep prompt (`prompt.depth=6`: the prompt positions' states
  replaced before every one of MiniLM's layers, P-tuning v2 style);
- r2d2-pool: r2d2-noconsistency with prompts generated per input (`prompt.pool_size=8`: a
  pool of 8 prompts with keys, each text's prompt their mix by its frozen embedding,
  MetaPrompter-like);
- r2d2-ridge-steps: r2d2's θ, its prompt adapted at test on the matched support loss
  (leave-one-out through the ridge head, `inner.loss=ridge`) instead of prototypes'.
- r2d2-distill: r2d2-noconsistency meta-trained with a teacher (`meta.distill=1`,
  all-mpnet-base-v2 at T = 2 in every actor: its soft labels of each task's queries
  beside their labels in the query loss); tested without the teacher, as the others.

Settings (BANKING77 is never used for meta-training or selection):
- banking77-full: 77-way 5- and 10-shot, 3 support draws from the train file, 10 test
  queries per class (770), each method's difference to the linear probe paired per draw;
- banking77-5way: 5-way 1-shot episodes;
- clinc150-within: CLINC150's held-out domains (travel, kitchen_and_dining), 5-way 1-shot.
`--backbone` puts every variant and baseline on another frozen backbone (runs/hm-<run>-<backbone>,
bench/results/headmatched-<backbone>.json) and pairs each variant with the served backbone's
(all-MiniLM-L6-v2's) linear probe of headmatched.json as well: the same tasks, so the
difference says whether the larger model's prompt beats what a user would serve today.
Every prompted method is scored with both heads at 0 and 5 steps of prompt adaptation
(the prototype loss of `eval.inner`); meta-validation selects θ at 0 steps with the
probe head (the head-matched variants) or prototypes (multitask), so 0 steps is the
budget the comparison reports, 5 is shown beside it. Prints each table and every
prompted method's paired difference to the linear probe, and writes
bench/results/headmatched.json (an earlier evaluation of a setting whose variants cannot
be shown beside this one's, its probe having scored other tasks, is kept whole under
`earlier_evaluations`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from metaray.config import load_config
from metaray.distributed import RayRunner, train
from metaray.eval import evaluate, format_table, paired_difference, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "intents-r2d2.yaml"


@dataclass(frozen=True)
class Variant:
    """An eval method's checkpoint: the run `run` (trained with `train` overrides), scored
    with the `test` overrides of the evaluation."""

    method: str
    run: str
    train: tuple[str, ...] = ()
    test: tuple[str, ...] = ()

    @property
    def own_model(self) -> bool:
        """Its test changes the model the actors build (a prompt of another shape)."""
        return any(o.startswith("prompt.") for o in self.test)

    def eval(self, tag: str) -> list[str]:
        """The overrides that score its checkpoint (runs/hm-<run><tag>)."""
        return [
            f"eval.methods=[{self.method}]",
            f"eval.checkpoints={{{self.method}: runs/hm-{self.run}{tag}}}",
            *self.test,
        ]


VARIANTS = {
    "r2d2": Variant("r2d2", "r2d2"),
    "r2d2-ridge-steps": Variant("r2d2", "r2d2", test=("eval.inner.loss=ridge",)),
    "r2d2-noconsistency": Variant("r2d2", "r2d2-noconsistency", ("meta.consistency=0",)),
    "multitask": Variant("multitask", "multitask", ("meta.algorithm=multitask",)),
    "r2d2-deep": Variant("r2d2", "r2d2-deep", ("prompt.depth=6",), ("prompt.depth=6",)),
    "r2d2-pool": Variant("r2d2", "r2d2-pool", ("meta.consistency=0", "prompt.pool_size=8"), ("prompt.pool_size=8",)),
    "r2d2-distill": Variant(
        "r2d2",
        "r2d2-distill",
        ("meta.consistency=0", "meta.distill=1", "distill.teacher=all-mpnet-base-v2", "distill.temperature=2"),
    ),
}
SETTINGS = {
    "banking77-full": [],
    "banking77-5way": ["eval.protocol=episodes", "eval.shots=[1]", "eval.q_query=10"],
    "clinc150-within": ["eval.protocol=episodes", "eval.target=clinc150/test", "eval.shots=[1]", "eval.q_query=10"],
}
BASELINES = ["protonet", "linear_probe", "random"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--episodes", type=int, default=200, help="episodes of the 5-way 1-shot settings")
    parser.add_argument("--backbone", help="another frozen backbone for every method (default: the config's)")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every config")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    tag = f"-{args.backbone}" if args.backbone else ""
    args.overrides = [f"model.backbone={args.backbone}", *args.overrides] if args.backbone else args.overrides
    served = ROOT / "bench" / "results" / "headmatched.json"
    path = served.with_name(f"headmatched{tag}.json")
    out: dict = json.loads(path.read_text()) if path.is_file() else {}
    out.setdefault("training", {})
    out.setdefault("evaluations", {})
    # with --backbone: the served backbone's evaluations, whose probe scored the same tasks
    served_rows = json.loads(served.read_text())["evaluations"] if tag and served.is_file() else None
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    runs = {VARIANTS[name].run: VARIANTS[name].train for name in args.variants}
    for run, overrides in runs.items() if not args.skip_train else ():
        cfg = load_config(CONFIG, [*overrides, f"output.dir=runs/hm-{run}{tag}", *args.overrides])
        start = time.perf_counter()
        summary = train(cfg)
        out["training"][run] = {**summary, "seconds": time.perf_counter() - start, "command": command}
        print(f"[train] {run}: {out['training'][run]}", flush=True)
        write_result(out, path, command)
    for setting in args.settings:
        extra = [*SETTINGS[setting], f"eval.episodes={args.episodes}", *args.overrides]
        base = load_config(CONFIG, [*extra, f"eval.methods=[{','.join(BASELINES)}]"])
        start = time.perf_counter()
        # a variant whose model differs (prompt.depth, prompt.pool_size) gets actors of its own, after the others'
        shared = [name for name in args.variants if not VARIANTS[name].own_model]
        own = [name for name in args.variants if VARIANTS[name].own_model]
        runner = RayRunner(base)
        try:
            result = evaluate(base, runner)
            for name in shared:
                add_variant(result, name, load_config(CONFIG, [*extra, *VARIANTS[name].eval(tag)]), runner)
        finally:
            runner.shutdown()
        for name in own:
            cfg = load_config(CONFIG, [*extra, *VARIANTS[name].eval(tag)])
            runner = RayRunner(cfg)
            try:
                add_variant(result, name, cfg, runner)
            finally:
                runner.shutdown()
        earlier = out["evaluations"].get(setting, {})
        shown = keep_earlier(result, earlier, args.variants)
        set_aside(out, setting, earlier, shown)
        result["paired_vs_linear_probe"] = paired(result, shown)
        if served_rows is not None:
            probes = served_rows.get(setting, {}).get("settings", {})
            result["paired_vs_served_linear_probe"] = paired(result, shown, probes)
        out["evaluations"][setting] = {**result, "seconds": time.perf_counter() - start, "command": command}
        print(f"\n## {setting}\n{format_table(result)}", flush=True)
        for key in ("paired_vs_linear_probe", "paired_vs_served_linear_probe"):
            for shots, diffs in result.get(key, {}).items():
                for name, by_step in diffs.items():
                    for step, d in by_step.items() if name in args.variants or name == "random" else ():
                        diff = f"{d['mean']:+.2f} ± {d['ci95']:.2f} (n={d['n']})"
                        print(f"{shots} {name} ({step} steps) - {key.removeprefix('paired_vs_')}: {diff}")
        write_result(out, path, command)


def add_variant(result: dict, name: str, cfg, runner) -> None:
    """Score variant `name` (`cfg`: its evaluation) on `runner` into `result`'s settings."""
    method = VARIANTS[name].method
    for shots, rows in evaluate(cfg, runner)["settings"].items():
        result["settings"][shots][name] = rows[method]


def keep_earlier(result: dict, earlier: dict, evaluated: list[str]) -> list[str]:
    """Put the variants an earlier evaluation of this setting scored, and this one did not,
    beside this one's where it scored the same tasks (its linear probe's per-task scores
    are this one's; another `--episodes` is other tasks); the variants shown."""
    for shots, rows in earlier.get("settings", {}).items():
        now = result["settings"].get(shots, {})
        same = shots in result["settings"] and probe_values(rows) == probe_values(now)
        for name in VARIANTS if same else ():
            if name not in evaluated and name in rows:
                result["settings"][shots][name] = rows[name]
    return [name for name in VARIANTS if any(name in rows for rows in result["settings"].values())]


def set_aside(out: dict, setting: str, earlier: dict, shown: list[str]) -> None:
    """Keep an earlier evaluation whose variants this one could not show beside its own
    (its probe scored other tasks, or another machine's probe differs by a query) whole,
    with its own probe, under `earlier_evaluations`: never lost."""
    lost = {name for rows in earlier.get("settings", {}).values() for name in rows if name in VARIANTS}
    if lost - set(shown):
        out.setdefault("earlier_evaluations", {})[setting] = earlier


def probe_cell(rows: dict) -> dict | None:
    """The linear probe's cell in a setting's rows (None: not scored)."""
    return rows.get("linear_probe", {}).get("heads", {}).get("probe", {}).get("0")


def probe_values(rows: dict) -> list | None:
    """The linear probe's per-task accuracies in a setting's rows (None: not scored)."""
    return (probe_cell(rows) or {}).get("values")


def paired(result: dict, variants: list[str], probes: dict | None = None) -> dict:
    """Each variant's (and random-init prompt tuning's) probe-head accuracy after each
    budget of prompt steps, minus the linear probe's (`probes`: another evaluation's rows
    of the same tasks, by shot setting; default this one's), per task: mean and 95% interval."""
    out, against = {}, result["settings"] if probes is None else probes  # {}: no probe to pair with
    for shots, rows in result["settings"].items():
        probe = probe_cell(against.get(shots, {}))
        if probe is None:
            continue
        cells = {name: rows[name]["heads"]["probe"] for name in [*variants, "random"] if name in rows}
        out[shots] = {
            name: {step: paired_difference(cell, probe) for step, cell in by_step.items()}
            for name, by_step in cells.items()
        }
    return out


if __name__ == "__main__":
    main()
