"""Checkpoints round-trip θ and the outer optimizer, are atomic, and keep the last N."""

import json

import pytest
import torch

from metaray.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from metaray.config import MetaConfig
from metaray.distributed.adapter import TaskResult
from metaray.distributed.aggregator import MetaAggregator


def stepped_aggregator(rounds: int) -> MetaAggregator:
    agg = MetaAggregator(torch.zeros(2, 3), MetaConfig(outer_optimizer="adam", outer_lr=0.1))
    for r in range(rounds):
        agg.step(TaskResult(torch.full((2, 3), float(r + 1)), 0.5, 0.4, None))
    return agg


def test_round_trip_restores_theta_and_optimizer(tmp_path):
    agg = stepped_aggregator(3)
    save_checkpoint(tmp_path, agg.state_dict(), {"note": "x"})
    state, meta = load_checkpoint(tmp_path)
    restored = MetaAggregator(torch.zeros(2, 3), MetaConfig(outer_optimizer="adam", outer_lr=0.1))
    restored.load_state_dict(state)
    assert torch.equal(restored.get_meta_prompt(), agg.get_meta_prompt()) and restored.round == 3
    step = TaskResult(torch.ones(2, 3), 0.0, 0.0, None)
    agg.step(step)
    restored.step(step)
    assert torch.equal(restored.get_meta_prompt(), agg.get_meta_prompt())
    assert meta["note"] == "x"


def test_keeps_last_n_and_best_and_leaves_no_temporaries(tmp_path):
    agg = MetaAggregator(torch.zeros(2, 3), MetaConfig())
    for r in range(5):
        agg.round = r + 1
        save_checkpoint(tmp_path, agg.state_dict(), {}, keep_last=2, best=(r == 0))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best", "latest", "round-000001", "round-000004", "round-000005"]
    assert resolve_checkpoint(tmp_path).name == "round-000001"
    assert resolve_checkpoint(tmp_path, "latest").name == "round-000005"
    assert json.loads((tmp_path / "round-000005" / "meta.json").read_text())["round"] == 5


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_checkpoint(tmp_path)
