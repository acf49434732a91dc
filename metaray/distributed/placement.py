"""Where the adapter actors go, and a check, before any starts, that the cluster can take
them: a request no node can meet would otherwise leave Ray waiting for ever."""

from __future__ import annotations

import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from metaray.config import RayConfig
from metaray.errors import MetarayError

GIB = 2**30


class PlacementError(MetarayError):
    """The cluster cannot hold the adapter actors the config asks for; the message names the
    resource."""


def actor_demand(r: RayConfig) -> dict[str, float]:
    """What one adapter actor reserves, in Ray's resource names (memory in bytes)."""
    demand = {"CPU": r.cpus_per_actor, "GPU": r.gpus_per_actor, "memory": r.memory_per_actor_gb * GIB}
    return {name: amount for name, amount in {**demand, **r.resources_per_actor}.items() if amount > 0}


def _shown(name: str, amount: float) -> str:
    return f"{amount / GIB:.3g} GiB of memory" if name == "memory" else f"{amount:g} {name}"


def unplaceable(demand: dict[str, float], count: int, nodes: list[dict]) -> str:
    """'' where `count` actors of `demand` fit on the alive nodes' total resources (first
    fit, node by node), else what is missing."""
    free = [dict(node["Resources"]) for node in nodes if node["Alive"]]
    for name, need in demand.items():
        most = max((node.get(name, 0.0) for node in free), default=0.0)
        if most < need:
            return f"no node has {_shown(name, need)} for one adapter actor (the most any node has: {most:g})"
    placed = 0
    for node in free:
        while placed < count and all(node.get(name, 0.0) >= need for name, need in demand.items()):
            for name, need in demand.items():
                node[name] -= need
            placed += 1
    if placed < count:
        each = ", ".join(_shown(name, need) for name, need in demand.items())
        return f"the cluster's nodes hold {placed} adapter actors of {each} each; ray.num_actors asks for {count}"
    return ""


def wait_until_placeable(r: RayConfig) -> None:
    """Return once the cluster can hold `ray.num_actors` adapters; PlacementError naming the
    missing resource after `ray.connect_timeout_s` (an autoscaling cluster may add nodes
    meanwhile: give it longer)."""
    deadline = time.monotonic() + r.connect_timeout_s
    while missing := unplaceable(actor_demand(r), r.num_actors, ray.nodes()):
        if time.monotonic() > deadline:
            raise PlacementError(
                f"{missing}, after {r.connect_timeout_s:g} s: lower ray.num_actors or ray.*_per_actor, add nodes "
                "that have the resource, or raise ray.connect_timeout_s for an autoscaling cluster"
            )
        time.sleep(0.5)


def adapter_strategy(r: RayConfig) -> str | None:
    """Ray's scheduling strategy for the adapter actors (`ray.placement`). None leaves it to
    Ray, and keeps the adapters of a Tune trial in the trial's placement group (whose bundles
    the sweep spreads as `ray.placement` says); an explicit strategy would take them out."""
    if r.placement == "default" or ray.util.get_current_placement_group() is not None:
        return None
    return "SPREAD"


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """Pinned to the driver's node: θ's owner must outlive any worker node."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
