"""The pictures beside the numbers: `accuracy_vs_steps.png` beside `metaray eval`'s JSON,
`curves.png` in a run folder (losses and meta-validation per round), and the sweep's
`curves.png`. PNG bytes from matplotlib's file-only backend (no screen needed)."""

from __future__ import annotations

import io
import json


def figure(ncols: int = 1, width: float = 6.5, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def accuracy_vs_steps(result: dict) -> bytes:
    """One panel per setting: every method and head's mean score (95% interval as error
    bars) against the adaptation steps on each task."""
    settings = result["settings"]
    fig, axes = figure(max(len(settings), 1))
    for ax, (name, methods) in zip(axes, settings.items(), strict=False):
        for method, row in methods.items():
            for head, by_step in row["heads"].items():
                steps = sorted(by_step, key=int)
                means = [by_step[s]["mean"] for s in steps]
                errors = [by_step[s].get("ci95", 0.0) for s in steps]
                label = method if len(row["heads"]) == 1 else f"{method} ({head})"
                ax.errorbar([int(s) for s in steps], means, yerr=errors, marker="o", capsize=3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("adaptation steps")
        ax.set_ylabel("score (mean over tasks, 95% interval)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="best")
    return png(fig)


def training_curves(metrics_jsonl: str) -> bytes:
    """Support and query loss per round (left), meta-validation score where measured (right)."""
    rows = [json.loads(line) for line in metrics_jsonl.splitlines() if line.strip()]
    rows = list({int(r["round"]): r for r in rows}.values())  # a resumed run: the last line of each round
    rows.sort(key=lambda r: int(r["round"]))
    fig, (losses, val) = figure(2, width=5.5)
    for key in ("support_loss", "query_loss"):
        points = [(r["round"], r[key]) for r in rows if key in r]
        if points:
            losses.plot(*zip(*points, strict=True), label=key.replace("_", " "))
    losses.set_xlabel("round")
    losses.set_ylabel("loss (mean over the round's tasks)")
    losses.legend(fontsize=8)
    points = [(r["round"], r["meta_val_score"]) for r in rows if "meta_val_score" in r]
    if points:
        val.plot(*zip(*points, strict=True), marker="o", color="tab:green")
    val.set_xlabel("round")
    val.set_ylabel("meta-validation score")
    val.set_title("meta-validation" if points else "no meta-validation in this run", fontsize=10)
    for ax in (losses, val):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return png(fig)
