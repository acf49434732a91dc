"""With a round deadline, θ steps with the mean over the tasks that finished in time."""

import pytest
import torch

from metaray.config import load_config
from metaray.distributed import RayRunner, TaskAdapter, preflight

pytestmark = pytest.mark.integration


def test_deadline_steps_with_the_finished_tasks_only(data_dir, tmp_path, ray_local):
    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"data.data_dir={data_dir}",
            f"output.dir={tmp_path}",
            "meta.meta_batch_size=3",
            "meta.round_deadline_s=0.001",  # no task can finish this fast
            "meta.min_tasks=1",
            "meta.eval_every=0",
        ],
    )
    specs = [preflight(cfg).spec(i) for i in range(3)]
    runner = RayRunner(cfg)
    try:
        theta0 = runner.init_prompt()
        runner.start(theta0)
        metrics = runner.round(specs)
        theta1 = runner.meta_prompt()
        later = runner.round([preflight(cfg).spec(i) for i in range(3, 6)])  # stragglers must not stall it
    finally:
        runner.shutdown()
    assert metrics["tasks"] == 1 and later["tasks"] >= 1
    adapter = TaskAdapter(cfg)
    candidates = [theta0 - cfg.meta.outer_lr * adapter.adapt(theta0, spec).pseudo_grad for spec in specs]
    assert any(torch.allclose(theta1, c, atol=1e-6) for c in candidates), "θ is not one finished task's update"
    assert not torch.allclose(candidates[0], candidates[1], atol=1e-6), "tasks too alike for the check to mean much"
