"""`meta.aggregation: tree`: per-node sub-aggregators sum the pseudo-gradients before the
root steps θ; the θ it gives equals flat aggregation's bit for bit (float64 sums of float32
pseudo-gradients are exact), on one node and on a local cluster of two worker nodes."""

import os
import subprocess
import sys
from pathlib import Path

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


TWO_NODES = """
import sys, ray, torch
from ray.cluster_utils import Cluster
from metaray.config import load_config
from metaray.distributed import RayRunner, preflight

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
for _ in range(2):
    cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
thetas = {}
for aggregation in ("flat", "tree"):
    cfg = load_config("configs/tiny.yaml", [f"data.data_dir={sys.argv[1]}", f"output.dir={sys.argv[2]}",
        "meta.meta_batch_size=4", "meta.eval_every=0", f"meta.aggregation={aggregation}"])
    sampler, runner = preflight(cfg), RayRunner(cfg)
    try:
        runner.start(runner.init_prompt())
        for r in range(2):
            runner.round([sampler.spec(r * 4 + i) for i in range(4)])
        thetas[aggregation] = runner.meta_prompt()
        nodes = runner.node_of
    finally:
        runner.shutdown()
assert len(set(nodes)) == 2, nodes
assert torch.equal(thetas["flat"], thetas["tree"])
print("OK", len(set(nodes)))
ray.shutdown()
cluster.shutdown()
"""


def test_tree_aggregation_on_two_nodes_equals_flat(data_dir, tmp_path):
    """A local cluster of a head and two 1-CPU worker nodes (`ray.cluster_utils.Cluster`, in
    its own process): the two adapters land on different nodes, each node gets its own
    sub-aggregator, and θ equals flat aggregation's bit for bit."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", TWO_NODES, data_dir, str(tmp_path)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0 and "OK 2" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]
