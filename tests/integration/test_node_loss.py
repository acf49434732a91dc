"""A local 3-node cluster (`ray.cluster_utils.Cluster`, in a process of its own: a 0-CPU head
and two worker nodes), built once for two checks:

- tree aggregation on two nodes: the adapters land on different worker nodes, each node gets
  its own sub-aggregator, and θ equals flat aggregation's bit for bit;
- a worker node lost mid-round (tree aggregation): its adapter and sub-aggregator restart on
  the surviving node, its task re-runs, the round completes, and θ is the fault-free run's
  bit for bit. The aggregator lives on the driver's node, so θ outlives any worker node."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

THREE_NODES = """
import sys, threading, time, ray, torch
from ray.cluster_utils import Cluster
from metaray.config import load_config
from metaray.distributed import RayRunner, preflight
from ray._private.internal_api import node_stats

def created_bytes():  # bytes each alive node's object store has created so far (put there or pulled in)
    return {n["NodeID"]: node_stats(n["NodeManagerAddress"], n["NodeManagerPort"], False).store_stats
            .cumulative_created_bytes for n in ray.nodes() if n["Alive"]}

# A crashed node's raylet is declared dead after 4 missed 0.5 s health checks, not the default ~30 s.
fast = {"health_check_period_ms": 500, "health_check_failure_threshold": 4, "health_check_timeout_ms": 500}
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": fast})
workers = [cluster.add_node(num_cpus=2) for _ in range(2)]  # room for the lost node's adapter
ray.init(address=cluster.address)
driver = ray.get_runtime_context().get_node_id()
base = [f"data.data_dir={sys.argv[1]}", f"output.dir={sys.argv[2]}", "meta.meta_batch_size=4",
    "meta.eval_every=0", "meta.inner.steps=4", "ray.placement=spread"]

def run(aggregation, lose_after):
    cfg = load_config("configs/tiny.yaml", [*base, f"meta.aggregation={aggregation}"])
    stored = created_bytes()
    sampler, runner = preflight(cfg), RayRunner(cfg)
    try:
        runner.start(runner.init_prompt())
        backbone = ray.get(runner.backbone_ref).nbytes
        before = ray.get([a.node_id.remote() for a in runner.actors])
        assert len(set(before)) == 2 and driver not in before, before  # spread over the worker nodes
        subs = sorted(runner.subs)  # tree: one sub-aggregator per adapter node
        if lose_after:
            victim = next(w for w in workers if w.node_id == before[1])
            workers.remove(victim)
            threading.Timer(lose_after, cluster.remove_node, (victim,), {"allow_graceful": False}).start()
        start = time.perf_counter()
        metrics = [runner.round([sampler.spec(r * 4 + i) for i in range(4)]) for r in range(2)]
        first_round = metrics[0]["_s"] = time.perf_counter() - start
        assert not lose_after or first_round > lose_after, "the round ended before the node was lost"
        after = ray.get([a.node_id.remote() for a in runner.actors])
        # The shared backbone reached each worker node once through the object store, also the
        # node that took over the lost node's adapter (its restart maps the node's copy).
        moved = {n: b - stored.get(n, 0) for n, b in created_bytes().items() if n in before}
        assert all(backbone <= b < 1.5 * backbone for b in moved.values()), (backbone, moved)
        print("MOVED", backbone, sorted(moved.values()))
        return runner.meta_prompt(), metrics, before, after, subs
    finally:
        runner.shutdown()

clean, clean_metrics, _, _, _ = run("flat", None)
tree, tree_metrics, before, _, subs = run("tree", None)
assert subs == sorted(set(before)), (subs, before)
assert torch.equal(clean, tree) and not torch.equal(clean, torch.zeros_like(clean))
assert [m["tasks"] for m in clean_metrics] == [m["tasks"] for m in tree_metrics] == [4, 4]
for a, b in zip(clean_metrics, tree_metrics):  # the sums of the losses too
    assert abs(a["support_loss"] - b["support_loss"]) < 1e-9 and abs(a["query_loss"] - b["query_loss"]) < 1e-9
print("OK two-node tree equals flat", len(set(before)), len(subs), flush=True)
# tree, where the lost node takes its adapter and its sub-aggregator with it; both restart on
# the survivor (flat's aggregator lives on the driver's node: only its adapter would move)
lost, lost_metrics, before, after, _ = run("tree", 1.0)
assert set(after) == {before[0]}, (before, after)  # the lost node's adapter now runs on the survivor
assert [m["tasks"] for m in lost_metrics] == [4, 4], lost_metrics
assert torch.equal(clean, lost)
print("OK tree", len(set(before)), f"{lost_metrics[0]['_s']:.1f}s")
ray.shutdown()
cluster.shutdown()
"""


@pytest.fixture(scope="module")
def three_nodes(data_dir, tmp_path_factory) -> subprocess.CompletedProcess:
    """The script above, run once for both tests (each starts a cluster and actors: most of
    their time)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    root = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("three-nodes")
    return subprocess.run([sys.executable, "-c", THREE_NODES, data_dir, str(out)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_tree_aggregation_on_two_nodes_equals_flat(three_nodes):
    """The two adapters land on different worker nodes, each node gets its own
    sub-aggregator, and θ (and the rounds' summed losses) after two rounds equal flat
    aggregation's."""
    run = three_nodes
    assert "OK two-node tree equals flat 2 2" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]


def test_a_lost_worker_node_leaves_theta_unchanged(three_nodes):
    """Tree aggregation loses a worker node in its first round, and with it an adapter and a
    sub-aggregator; both restart on the survivor. (Flat aggregation keeps its aggregator on
    the driver's node, so a lost node costs it only the adapter restart test_fault_tolerance
    checks.)"""
    run = three_nodes
    assert run.returncode == 0 and "OK tree 2" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]
