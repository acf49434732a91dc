"""A run stopped after round r and resumed ends bit-identical to an uninterrupted run;
a warm-started run begins from another run's θ."""

import pytest
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import ConfigError, load_config
from metaray.distributed import make_runner, train
from metaray.distributed.driver import start_prompt

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


def test_warm_start_begins_from_the_checkpoints_theta(data_dir, tmp_path):
    train(config(data_dir, tmp_path / "a", "meta.rounds=1", "prompt.init=random"), progress=False)
    warm, _ = load_checkpoint(tmp_path / "a")
    runner = make_runner(config(data_dir, tmp_path / "b", "prompt.init=vocab", f"prompt.warm_start={tmp_path / 'a'}"))
    try:
        assert torch.equal(start_prompt(runner, runner.cfg), warm["meta_prompt"])
        assert not torch.allclose(runner.init_prompt(), warm["meta_prompt"])  # prompt.init alone: another θ₀
    finally:
        runner.shutdown()


def test_warm_start_refuses_a_missing_checkpoint_or_another_shape(data_dir, tmp_path):
    from metaray.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=str(tmp_path / "none")):
        train(config(data_dir, tmp_path / "b", f"prompt.warm_start={tmp_path / 'none'}"), progress=False)
    train(config(data_dir, tmp_path / "a", "meta.rounds=1"), progress=False)
    with pytest.raises(ConfigError, match=r"shape \(4, 384\).*has \(8, 384\)"):
        train(config(data_dir, tmp_path / "b", "prompt.length=8", f"prompt.warm_start={tmp_path / 'a'}"))


def test_a_cluster_failure_names_the_checkpoint_to_resume_from(data_dir, tmp_path, ray_local):
    """The aggregator's process dies after round 2 (as with its node): the run stops with a
    message naming round 2's checkpoint and --resume, and --resume completes the run."""
    import ray

    from metaray.distributed import RayRunner
    from metaray.distributed.driver import RunInterrupted

    cfg = load_config(
        "configs/tiny.yaml",
        [f"data.data_dir={data_dir}", f"output.dir={tmp_path}", "meta.eval_every=0", "meta.rounds=4"],
    )
    runner = RayRunner(cfg)
    try:
        kill = lambda metrics: metrics["round"] == 2 and ray.kill(runner.aggregator, no_restart=True)  # noqa: E731
        with pytest.raises(RunInterrupted, match=r"ActorDiedError.*round-0*2\b.*--resume"):
            train(cfg, progress=False, runner=runner, on_round=kill)
    finally:
        runner.shutdown()
    assert train(cfg, progress=False, resume=True)["rounds"] == 4
    assert load_checkpoint(tmp_path, "latest")[1]["round"] == 4
