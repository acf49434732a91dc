"""A placement the cluster cannot satisfy fails within `ray.connect_timeout_s`, naming the
resource, before any actor starts (Ray itself would wait for ever)."""

import time

import pytest
import ray

from metaray.config import load_config
from metaray.distributed import RayRunner
from metaray.distributed.placement import PlacementError, actor_demand, unplaceable

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("ray.gpus_per_actor=1", "1 GPU"),  # more GPU actors than GPUs (this cluster has none)
        ("ray.resources_per_actor={trainer: 1}", "1 trainer"),  # a node resource nobody has
        ("ray.num_actors=3", "ray.num_actors asks for 3"),  # 2 CPUs hold 2 adapters of 1 CPU
    ],
)
def test_an_unsatisfiable_placement_fails_fast_and_names_the_resource(data_dir, tmp_path, ray_local, setting, named):
    cfg = load_config(
        "configs/tiny.yaml",
        [f"data.data_dir={data_dir}", f"output.dir={tmp_path}", "ray.connect_timeout_s=1", setting],
    )
    start = time.monotonic()
    with pytest.raises(PlacementError, match=named):
        RayRunner(cfg)
    assert time.monotonic() - start < 1 + 5, "it must fail within the connect timeout"


def test_the_placement_check_counts_what_the_nodes_hold(ray_local):
    """On this 2-CPU node: 2 adapters of 1 CPU fit, 3 do not, 4 of 0.5 do."""
    nodes = ray.nodes()
    cfg = load_config("configs/tiny.yaml", [])
    assert unplaceable(actor_demand(cfg.ray), 2, nodes) == ""
    assert "asks for 3" in unplaceable(actor_demand(cfg.ray), 3, nodes)
    assert unplaceable({"CPU": 0.5}, 4, nodes) == ""
