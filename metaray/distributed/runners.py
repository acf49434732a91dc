"""Where the task adapters and the aggregator run: Ray actors, or this process.

Both runners expose the same four calls, so the training loop and the evaluation
protocol are written once. The local runner exists to measure what Ray costs.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from typing import Protocol

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from metaray.config import ExperimentConfig, PromptConfig
from metaray.core import InnerConfig
from metaray.data import TaskSpec
from metaray.distributed.adapter import EvalResult, EvalUnit, TaskAdapter
from metaray.distributed.aggregator import MetaAggregator, NodeAggregator
from metaray.distributed.placement import adapter_strategy, on_this_node, wait_until_placeable
from metaray.distributed.sharded import ShardedRunner
from metaray.kinds import kind_of
from metaray.models import export_backbone
from metaray.runtime import connect

Progress = Callable[[int], None] | None  # told how many more evaluation units finished


class Runner(Protocol):
    cfg: ExperimentConfig  # what its actors were built with

    def init_prompt(self, prompt_cfg: PromptConfig | None = None) -> torch.Tensor: ...
    def start(self, meta_prompt: torch.Tensor, state: dict | None = None) -> None: ...
    def round(self, specs: list[TaskSpec]) -> dict[str, float]: ...
    def meta_prompt(self) -> torch.Tensor: ...
    def aggregator_state(self) -> dict: ...
    def evaluate(
        self, units: list[EvalUnit], steps: tuple[int, ...], inner: InnerConfig, heads, done: Progress = None
    ) -> list[EvalResult]: ...
    def backbone_digests(self) -> list[str]: ...
    def shutdown(self) -> None: ...


class LocalRunner:
    """One adapter and the aggregator in this process, tasks one after another."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.adapter = TaskAdapter(cfg)
        self.aggregator: MetaAggregator | None = None

    def init_prompt(self, prompt_cfg: PromptConfig | None = None) -> torch.Tensor:
        return self.adapter.init_prompt(prompt_cfg)

    def start(self, meta_prompt: torch.Tensor, state: dict | None = None) -> None:
        self.aggregator = MetaAggregator(meta_prompt, self.cfg.meta)
        if state is not None:
            self.aggregator.load_state_dict(state)

    def round(self, specs: list[TaskSpec]) -> dict[str, float]:
        theta = self.aggregator.get_meta_prompt()
        return self.aggregator.step(*[self.adapter.adapt(theta, spec) for spec in specs])

    def meta_prompt(self) -> torch.Tensor:
        return self.aggregator.get_meta_prompt()

    def aggregator_state(self) -> dict:
        return self.aggregator.state_dict()

    def evaluate(self, units, steps, inner, heads, done: Progress = None) -> list[EvalResult]:
        results = []
        for init, spec in units:
            results.append(self.adapter.evaluate(init, spec, steps, inner, heads))
            if done is not None:
                done(1)
        return results

    def backbone_digests(self) -> list[str]:
        return [self.adapter.backbone_digest()]

    def shutdown(self) -> None:
        pass


class BackboneHolder:
    """Holds the shared backbone's object reference (boxed in a list) for the adapters."""

    def __init__(self, boxed: list) -> None:
        self.boxed = boxed

    def get(self) -> list:
        return self.boxed


class RemoteAdapter(TaskAdapter):
    """A TaskAdapter actor that finds the shared backbone through a named holder actor.
    Any reference among a restartable actor's constructor arguments, even inside a list or
    an actor handle, is one Ray cannot restore once evicted (ray-project/ray#53727; Ray logs
    an error-level line for every such actor); a name is not one, and a restarted adapter
    asks the holder again."""

    def __init__(self, cfg: ExperimentConfig, holder: str = "") -> None:
        backbone = ray.get(ray.get(ray.get_actor(holder).get.remote())[0]) if holder else None
        super().__init__(cfg, backbone)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class RayRunner:
    """N task-adapter actors and one aggregator actor that owns θ.

    The frozen backbone enters the object store once (`ray.shared_backbone`) and every
    actor on a node maps that one read-only copy. Per round θ enters the object store
    once (the aggregator's return value), each actor gets that reference and a small
    `TaskSpec`, and the pseudo-gradients go straight from the adapters to the aggregator
    as object references.
    """

    def __init__(self, cfg: ExperimentConfig) -> None:
        connect(cfg.ray)
        self.cfg = cfg
        r = cfg.ray
        wait_until_placeable(r)  # a request no node meets fails here, named, rather than waiting for ever
        kind = kind_of(cfg)
        shares = r.shared_backbone and kind.hugging_face  # sharing rebuilds Hugging Face models only
        self.backbone_ref = ray.put(export_backbone(*kind.load_backbone(cfg.model))) if shares else None
        # A dead adapter is restarted and its pending tasks re-run; tasks are pure functions
        # of (θ, spec), so the round's result does not change. Tasks retry without limit, since
        # an actor on a lost node is "unavailable" (each retry fails at once) until Ray declares
        # the node dead and restarts it elsewhere; max_restarts is the bound.
        adapter_cls = ray.remote(RemoteAdapter).options(
            num_cpus=r.cpus_per_actor,
            num_gpus=r.gpus_per_actor,
            memory=int(r.memory_per_actor_gb * 2**30) or None,
            resources=dict(r.resources_per_actor) or None,
            scheduling_strategy=adapter_strategy(r),
            max_restarts=r.max_restarts,
            max_task_retries=-1,
        )
        holder, self.holder = "", None
        if shares:  # the adapters find the backbone by the holder's name (see RemoteAdapter)
            holder = f"metaray-backbone-{uuid.uuid4().hex}"
            pinned = ray.remote(BackboneHolder).options(name=holder, num_cpus=0, scheduling_strategy=on_this_node())
            self.holder = pinned.remote([self.backbone_ref])
        self.actors = [adapter_cls.remote(cfg, holder) for _ in range(r.num_actors)]
        # Each adapter's (first) node: said once, so a job's log shows how the work spread; with
        # meta.aggregation: tree, a sub-aggregator per node.
        self.node_of: list[str] = ray.get([actor.node_id.remote() for actor in self.actors])
        actors, nodes = len(self.actors), len(set(self.node_of))
        where = f"{actors} adapter actor{'s' * (actors != 1)} on {nodes} node{'s' * (nodes != 1)}"
        print(f"metaray: {where}", file=sys.stderr)
        self.subs: dict[str, ray.actor.ActorHandle] = {}
        if cfg.meta.aggregation == "tree":
            # Soft affinity and restarts: a lost node's sub-aggregator (stateless) comes back on
            # another node; the grouping stays by the adapters' first nodes, which changes no sum.
            sub_cls = ray.remote(NodeAggregator)
            for node in dict.fromkeys(self.node_of):
                on_node = NodeAffinitySchedulingStrategy(node, soft=True)
                options = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1, "scheduling_strategy": on_node}
                self.subs[node] = sub_cls.options(**options).remote()
        self.aggregator = None
        self.stragglers: dict[ray.ObjectRef, int] = {}  # dropped tasks still running -> actor index

    def init_prompt(self, prompt_cfg: PromptConfig | None = None) -> torch.Tensor:
        return ray.get(self.actors[0].init_prompt.remote(prompt_cfg))

    def start(self, meta_prompt: torch.Tensor, state: dict | None = None) -> None:
        # The aggregator is light (averaging (P, D) tensors); it must not hold a CPU the
        # adapters need on a small machine. It holds θ, so it lives on the driver's node.
        pinned = ray.remote(MetaAggregator).options(num_cpus=0, scheduling_strategy=on_this_node())
        self.aggregator = pinned.remote(meta_prompt, self.cfg.meta)
        if state is not None:
            ray.get(self.aggregator.load_state_dict.remote(state))

    def _dispatch(self, theta_ref, specs: list[TaskSpec]) -> tuple[list[ray.ObjectRef], list[int]]:
        """Each task to the actor with the fewest tasks queued (round-robin when all are
        idle); an actor still finishing a dropped task gets new work last."""
        if self.stragglers:
            _, running = ray.wait(list(self.stragglers), num_returns=len(self.stragglers), timeout=0)
            self.stragglers = {ref: self.stragglers[ref] for ref in running}
        load = [0] * len(self.actors)
        for i in self.stragglers.values():
            load[i] += 1
        refs, owners = [], []
        for spec in specs:
            i = min(range(len(load)), key=load.__getitem__)
            load[i] += 1
            refs.append(self.actors[i].adapt.remote(theta_ref, spec))
            owners.append(i)
        return refs, owners

    def round(self, specs: list[TaskSpec]) -> dict[str, float]:
        meta = self.cfg.meta
        refs, owners = self._dispatch(self.aggregator.get_meta_prompt.remote(), specs)
        if meta.round_deadline_s <= 0:
            return self._step(refs, owners)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=meta.round_deadline_s)
        if len(done) < max(meta.min_tasks, 1):
            done, _ = ray.wait(refs, num_returns=max(meta.min_tasks, 1))
        finished = set(done)
        for ref, owner in zip(refs, owners, strict=True):
            if ref not in finished:  # a queued task never starts; a running one finishes unused
                ray.cancel(ref)
                self.stragglers[ref] = owner
        # θ steps with the mean over the finished tasks, in task order (a fixed summation order).
        kept = [(ref, owner) for ref, owner in zip(refs, owners, strict=True) if ref in finished]
        return self._step([ref for ref, _ in kept], [owner for _, owner in kept])

    def _step(self, refs: list[ray.ObjectRef], owners: list[int]) -> dict[str, float]:
        """Flat: every pseudo-gradient to the aggregator. Tree: each node's sub-aggregator
        sums its adapters' tasks (in task order), and the aggregator steps with the sums."""
        if not self.subs:
            return ray.get(self.aggregator.step.remote(*refs))
        by_node: dict[str, list[ray.ObjectRef]] = {}
        for ref, owner in zip(refs, owners, strict=True):
            by_node.setdefault(self.node_of[owner], []).append(ref)
        partials = [self.subs[node].sum.remote(*group) for node, group in by_node.items()]
        return ray.get(self.aggregator.step_partials.remote(*partials))

    def meta_prompt(self) -> torch.Tensor:
        return ray.get(self.aggregator.get_meta_prompt.remote())

    def aggregator_state(self) -> dict:
        return ray.get(self.aggregator.state_dict.remote())

    def evaluate(self, units, steps, inner, heads, done: Progress = None) -> list[EvalResult]:
        refs_by_init: dict[int, ray.ObjectRef] = {}
        futures = []
        for i, (init, spec) in enumerate(units):
            ref = None
            if init is not None:
                ref = refs_by_init.setdefault(id(init), ray.put(init))
            futures.append(self.actors[i % len(self.actors)].evaluate.remote(ref, spec, steps, inner, heads))
        pending = list(futures)
        while pending and done is not None:
            finished, pending = ray.wait(pending, num_returns=1)
            done(len(finished))
        return ray.get(futures)

    def backbone_digests(self) -> list[str]:
        return ray.get([actor.backbone_digest.remote() for actor in self.actors])

    def memory(self) -> list[dict]:
        """Each adapter actor's memory (see `TaskAdapter.memory`)."""
        return ray.get([actor.memory.remote() for actor in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors + list(self.subs.values()) + [a for a in (self.aggregator, self.holder) if a]:
            ray.kill(actor)


def make_runner(cfg: ExperimentConfig) -> Runner:
    """This process (`ray.local`), DeepSpeed ZeRO-3 workers (`sharded.enabled`), or actors."""
    if cfg.sharded.enabled:
        return ShardedRunner(cfg)
    return LocalRunner(cfg) if cfg.ray.local else RayRunner(cfg)
