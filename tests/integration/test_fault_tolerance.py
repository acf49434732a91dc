"""An adapter actor killed mid-round is restarted, its task re-run, and θ is unchanged."""

import threading
import time

import pytest
import ray
import torch

from metaray.config import load_config
from metaray.distributed import LocalRunner, RayRunner, preflight

pytestmark = pytest.mark.integration


def one_round(cfg, kill_after: float | None) -> torch.Tensor:
    """θ after one round: on actors, the first killed `kill_after` s into it; or, with
    None, in this process (test_training shows actors give the same θ)."""
    local = kill_after is None
    runner = LocalRunner(cfg) if local else RayRunner(cfg)
    try:
        runner.start(runner.init_prompt())
        sampler = preflight(cfg)
        if not local:
            ray.get([a.backbone_digest.remote() for a in runner.actors])  # both actors up
            killer = threading.Timer(kill_after, lambda: ray.kill(runner.actors[0], no_restart=False))
            killer.start()
        start = time.perf_counter()
        runner.round([sampler.spec(i) for i in range(cfg.meta.meta_batch_size)])
        assert local or time.perf_counter() - start > kill_after, "round ended before the kill"
        return runner.meta_prompt()
    finally:
        runner.shutdown()


def test_killed_adapter_gives_the_same_theta(data_dir, tmp_path, ray_local):
    cfg = load_config(
        "configs/tiny.yaml",
        [f"data.data_dir={data_dir}", f"output.dir={tmp_path}", "meta.inner.steps=8", "meta.meta_batch_size=4"],
    )
    clean = one_round(cfg, None)
    faulty = one_round(cfg, kill_after=1.0)
    torch.testing.assert_close(faulty, clean, rtol=0, atol=1e-6)
