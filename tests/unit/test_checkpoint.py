"""Checkpoints round-trip θ and the outer optimizer, are atomic, and keep the last N."""

import json

import pytest
import torch

from metaray.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from metaray.config import MetaConfig
from metaray.distributed.adapter import TaskResult
from metaray.distributed.aggregator import MetaAggregator
from metaray.metrics import MetricsWriter
from metaray.storage import RunStore, StorageError, local_copy


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
    assert resolve_checkpoint(tmp_path).endswith("/round-000001")
    assert resolve_checkpoint(tmp_path, "latest").endswith("/round-000005")
    assert json.loads((tmp_path / "round-000005" / "meta.json").read_text())["round"] == 5


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_run_folder_by_uri_round_trips_and_prunes(tmp_path, scheme):
    """file:// goes through pyarrow's local filesystem (rename); memory:// through fsspec,
    a non-local filesystem like object storage (in-place PUTs, pointer last)."""
    uri = f"file://{tmp_path}/run" if scheme == "file" else f"memory://metaray-test-{tmp_path.name}/run"
    agg = stepped_aggregator(1)
    for r in range(4):
        agg.round = r + 1
        save_checkpoint(uri, agg.state_dict(), {}, keep_last=2, best=(r == 0))
    store = RunStore(uri)
    assert store.local == (scheme == "file")
    assert store.dirs("round-") == ["round-000001", "round-000003", "round-000004"]
    assert store.dirs(".") == [], "a temporary folder was left behind"
    state, meta = load_checkpoint(uri, "latest")
    assert meta["round"] == 4 and torch.equal(state["meta_prompt"], agg.get_meta_prompt())
    assert resolve_checkpoint(uri) == f"{uri}/round-000001"
    writer = MetricsWriter(uri)
    writer.write({"round": 1, "loss": 1.0})
    writer.write({"round": 2, "loss": 0.5})
    writer.close()
    assert [json.loads(line)["round"] for line in store.read_text("metrics.jsonl").splitlines()] == [1, 2]
    assert store.dirs("tensorboard") == ["tensorboard"]


def test_unknown_scheme_is_refused_by_name():
    with pytest.raises(StorageError, match="nosuch://bucket/run"):
        RunStore("nosuch://bucket/run")


def test_remote_data_folder_is_copied_once(tmp_path, monkeypatch):
    source = tmp_path / "remote" / "clinc150"
    source.mkdir(parents=True)
    (source / "data.csv").write_text("text,label\nhi,greet\n")
    monkeypatch.setenv("METARAY_CACHE", str(tmp_path / "cache"))
    copy = local_copy(f"file://{tmp_path}/remote")
    assert (copy / "clinc150" / "data.csv").read_text() == (source / "data.csv").read_text()
    assert local_copy(f"file://{tmp_path}/remote") == copy
    with pytest.raises(StorageError, match="missing"):
        local_copy(f"file://{tmp_path}/missing")
