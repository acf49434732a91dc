"""A run stopped after round r and resumed ends bit-identical to an uninterrupted run."""

import pytest
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import ConfigError, load_config
from metaray.distributed import train

pytestmark = pytest.mark.integration


def config(data_dir, out, *overrides):
    base = ["ray.local=true", "meta.eval_every=0", "meta.outer_optimizer=adam", "meta.outer_lr=1e-2"]
    return load_config("configs/tiny.yaml", [f"data.data_dir={data_dir}", f"output.dir={out}", *base, *overrides])


def test_resume_after_round_r_matches_the_uninterrupted_run(data_dir, tmp_path):
    train(config(data_dir, tmp_path / "full", "meta.rounds=3"), progress=False)
    train(config(data_dir, tmp_path / "cut", "meta.rounds=1"), progress=False)  # "killed" after round 1
    train(config(data_dir, tmp_path / "cut", "meta.rounds=3"), progress=False, resume=True)
    full, _ = load_checkpoint(tmp_path / "full", "latest")
    resumed, meta = load_checkpoint(tmp_path / "cut", "latest")
    assert meta["round"] == 3
    assert torch.equal(full["meta_prompt"], resumed["meta_prompt"])
    assert torch.equal(full["optimizer"]["state"][0]["exp_avg"], resumed["optimizer"]["state"][0]["exp_avg"])


def test_resume_refuses_a_config_that_changes_the_run(data_dir, tmp_path):
    train(config(data_dir, tmp_path, "meta.rounds=1"), progress=False)
    with pytest.raises(ConfigError, match=r"prompt.length: checkpoint 4, now 8[\s\S]*meta.meta_batch_size"):
        train(config(data_dir, tmp_path, "prompt.length=8", "meta.meta_batch_size=3"), progress=False, resume=True)


def test_resume_without_a_checkpoint_names_the_folder(data_dir, tmp_path):
    from metaray.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=str(tmp_path)):
        train(config(data_dir, tmp_path, "meta.rounds=1"), progress=False, resume=True)
