"""`meta.aggregation: tree`: per-node sub-aggregators sum the pseudo-gradients before the
root steps θ; the θ it gives equals flat aggregation's bit for bit (float64 sums of float32
pseudo-gradients are exact), on one node here; on a local cluster of two worker nodes in
test_node_loss.py, which builds that cluster once for its node-loss test too."""

import pytest
import ray
import torch

from metaray.config import load_config
from metaray.distributed import RayRunner, preflight

pytestmark = pytest.mark.integration


def theta_after_rounds(cfg, rounds: int = 2) -> tuple[torch.Tensor, list[dict], RayRunner]:
    sampler, b = preflight(cfg), cfg.meta.meta_batch_size
    runner = RayRunner(cfg)
    try:
        runner.start(runner.init_prompt())
        metrics = [runner.round([sampler.spec(r * b + i) for i in range(b)]) for r in range(rounds)]
        return runner.meta_prompt(), metrics, runner
    finally:
        runner.shutdown()


def test_tree_aggregation_equals_flat(data_dir, tmp_path, ray_local):
    base = [f"data.data_dir={data_dir}", f"output.dir={tmp_path}", "meta.meta_batch_size=3", "meta.eval_every=0"]
    flat, flat_metrics, _ = theta_after_rounds(load_config("configs/tiny.yaml", base))
    tree, tree_metrics, runner = theta_after_rounds(load_config("configs/tiny.yaml", [*base, "meta.aggregation=tree"]))
    assert set(runner.node_of) == {ray.get_runtime_context().get_node_id()} and len(runner.subs) == 1
    assert torch.equal(flat, tree) and not torch.equal(flat, torch.zeros_like(flat))
    for a, b in zip(flat_metrics, tree_metrics, strict=True):
        assert a["tasks"] == b["tasks"] == 3
        assert a["support_loss"] == pytest.approx(b["support_loss"], abs=1e-9)
        assert a["query_loss"] == pytest.approx(b["query_loss"], abs=1e-9)
