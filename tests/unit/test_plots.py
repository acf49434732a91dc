"""The pictures beside the numbers are real PNGs drawn from what they claim to show."""

import json

import pytest

from metaray.plots import accuracy_vs_steps, training_curves

PNG = b"\x89PNG\r\n"


def test_training_curves_of_a_resumed_run_keep_one_point_per_round(monkeypatch):
    rows = [{"round": r, "support_loss": 1 / r, "query_loss": 2 / r} for r in (1, 2, 3)]
    rows += [{"round": 3, "support_loss": 0.3, "query_loss": 0.6, "meta_val_score": 80.0}]  # written again on resume
    drawn = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.setdefault(kwargs.get("label", "val"), []).append(list(args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    assert training_curves("\n".join(json.dumps(r) for r in rows)).startswith(PNG)
    assert drawn["support loss"] == [[1, 2, 3]] and drawn["val"] == [[3]]


def test_accuracy_vs_steps_draws_every_method_and_head():
    cell = {"mean": 50.0, "ci95": 2.0, "n": 24}
    row = {"heads": {"proto": {"0": cell, "5": cell}}, "adapt_seconds": cell}
    result = {"settings": {"5-way 1-shot": {"reptile": row, "protonet": row}, "5-way 5-shot": {"reptile": row}}}
    assert accuracy_vs_steps(result).startswith(PNG)
    with pytest.raises(KeyError):
        accuracy_vs_steps({"nothing": {}})
