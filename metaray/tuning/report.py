"""What a sweep leaves behind, beside Tune's own state in OUTPUT/sweep:

- `trials.csv`: one row per trial: its values, last round, last and best metric, status;
- `curves.png`: the metric against round for every trial (early-stopped ones end early);
- `best.yaml`: the best trial's experiment, ready for `metaray train best.yaml`.
"""

from __future__ import annotations

import io

import yaml

from metaray.config import to_dict
from metaray.storage import RunStore
from metaray.tuning.space import trial_config
from metaray.tuning.sweep import Sweep


def trial_rows(sweep: Sweep) -> list[dict]:
    spec, rows = sweep.spec, []
    for result in sweep.grid:
        history = result.metrics_dataframe
        values = history[spec.metric].dropna() if history is not None and spec.metric in history else []
        best = (max if spec.mode == "max" else min)(values) if len(values) else float("nan")
        rows.append(
            {
                "trial": (result.metrics or {}).get("trial_id", ""),
                **result.config["params"],
                "rounds": int(history["round"].max()) if history is not None and "round" in history else 0,
                f"last_{spec.metric}": float(values.iloc[-1]) if len(values) else float("nan"),
                f"best_{spec.metric}": best,
                "error": "" if result.error is None else type(result.error).__name__,
            }
        )
    return rows


def write_csv(store: RunStore, rows: list[dict]) -> None:
    import csv

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    store.write_text("trials.csv", out.getvalue())


def write_plot(store: RunStore, sweep: Sweep) -> None:
    from metaray.plots import figure, png

    metric = sweep.spec.metric
    fig, (ax,) = figure(width=7, height=4.5)
    for result in sweep.grid:
        history = result.metrics_dataframe
        if history is None or metric not in history:
            continue
        points = history[["round", metric]].dropna()
        ax.plot(points["round"], points[metric], marker="o", label=(result.metrics or {}).get("trial_id", "?"))
    ax.set_xlabel("round")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    ax.set_title(f"{len(sweep.grid)} trials; early-stopped ones end early")
    if ax.lines:
        ax.legend(fontsize=6, loc="best")
    store.write_bytes("curves.png", png(fig))


def best_row(rows: list[dict], sweep: Sweep) -> dict:
    """Among the trials that ran the most rounds (those ASHA let finish), the best by the
    metric at their last round: the θ a rerun of best.yaml reproduces."""
    metric, sign = f"last_{sweep.spec.metric}", (1 if sweep.spec.mode == "max" else -1)
    done = [r for r in rows if r["rounds"] == max(row["rounds"] for row in rows) and r[metric] == r[metric]]
    if not done:
        raise RuntimeError(f"no trial reported {sweep.spec.metric}; see the trials' errors in trials.csv")
    return max(done, key=lambda r: sign * r[metric])


def write_best(store: RunStore, sweep: Sweep, best: dict) -> dict:
    """best.yaml: base + fixed overrides + the best trial's values, with its own output.dir."""
    spec = sweep.spec
    params = {path: best[path] for path in spec.space}
    out = f"{spec.output.rstrip('/')}/best-run"
    cfg = trial_config(spec, params, (*sweep.extra, f"output.dir={out}"))
    header = (
        f"# Best of the sweep in {spec.output} ({spec.metric}, {spec.mode}): {params}\n"
        f"#   metaray train {store.display('best.yaml')}\n"
    )
    store.write_text("best.yaml", header + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return {
        "params": params,
        "trial_id": best["trial"],
        spec.metric: best[f"last_{spec.metric}"],
        "rounds": best["rounds"],
    }


def write_report(sweep: Sweep) -> dict:
    store = RunStore(sweep.spec.output)
    rows = trial_rows(sweep)
    write_csv(store, rows)
    write_plot(store, sweep)
    best = write_best(store, sweep, best_row(rows, sweep))
    return {"trials": len(rows), "best": best, "output": sweep.spec.output}
