"""Sharded mode: the same meta-training driver over a DeepSpeed ZeRO-3 backbone.

A Ray Train `TorchTrainer` starts W workers and owns their process group (gloo on
CPU, NCCL on GPU); each worker partitions the frozen backbone with DeepSpeed
(`distributed.zero`) and then serves the driver's calls from a mailbox actor. The
driver keeps the `Runner` interface of actor mode, so `train`, `evaluate`, the
aggregator, checkpoints and Tune are unchanged:

    round(specs):  task i -> rank i mod W (B / W tasks each, in lockstep)
                   -> the ranks' g_i, back in task order -> MetaAggregator.step

Lockstep rule: every rank runs the same number of forward and backward passes.
Tasks of one run share one episode shape; the meta-batch must divide by W (the
config refuses it otherwise); evaluation units are padded to a multiple of W by
repeating the last one, whose extra results are dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import tempfile

import ray
import torch

from metaray.config import ExperimentConfig, PromptConfig
from metaray.data import TaskSpec
from metaray.distributed.adapter import EvalResult, EvalUnit
from metaray.distributed.aggregator import MetaAggregator
from metaray.distributed.zero import ShardedModeError, ShardedWorker, check_deepspeed
from metaray.runtime import connect

# Gathered layers are allocated and freed on every pass; with glibc's adaptive mmap
# threshold the freed buffers stay in the heap (measured: ~200 MiB more per worker on
# SmolLM2-135M). Fixed thresholds hand them back to the system.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"}


@ray.remote(num_cpus=0)
class Mailbox:
    """Commands from the driver, numbered; replies from each rank. All ranks read every
    command, so they run the same calls in the same order."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, list]] = []
        self.replies: dict[int, dict[int, object]] = {}
        self.changed = asyncio.Condition()

    async def post(self, name: str, per_rank: list) -> int:
        async with self.changed:
            self.commands.append((name, per_rank))
            self.changed.notify_all()
            return len(self.commands) - 1

    async def take(self, seq: int) -> tuple[str, list]:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.commands) > seq)
            return self.commands[seq]

    async def reply(self, seq: int, rank: int, value) -> None:
        async with self.changed:
            self.replies.setdefault(seq, {})[rank] = value
            self.changed.notify_all()

    async def collect(self, seq: int, world: int) -> list:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.replies.get(seq, {})) == world)
            self.commands[seq] = (self.commands[seq][0], [])  # the payload is served: free it
            replies = self.replies.pop(seq)
        return [replies[rank] for rank in range(world)]


def serve_commands(loop_config: dict) -> None:
    """The Ray Train worker loop: partition the backbone, then run the driver's commands."""
    cfg, mailbox = loop_config["cfg"], loop_config["mailbox"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    worker = ShardedWorker(cfg, is_node_leader=context.get_local_rank() == 0)
    seq = 0
    while True:
        name, per_rank = ray.get(mailbox.take.remote(seq))
        if name == "stop":
            return
        ray.get(mailbox.reply.remote(seq, rank, getattr(worker, name)(*per_rank[rank])))
        seq += 1


class ShardedRunner:
    """The `Runner` of sharded mode: W Ray Train workers and the aggregator in the driver."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        check_deepspeed()
        s = cfg.sharded
        # Ray Train's controller watches its workers through the State API, which the dashboard serves.
        connect(cfg.ray, embedded_cpus=math.ceil(s.num_workers * s.cpus_per_worker), dashboard=True)
        self.cfg, self.world = cfg, s.num_workers
        self.mailbox = Mailbox.remote()
        trainer = TorchTrainer(
            serve_commands,
            train_loop_config={"cfg": cfg, "mailbox": self.mailbox},
            torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo", timeout_s=int(s.collective_timeout_s)),
            scaling_config=ScalingConfig(
                num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker={"CPU": s.cpus_per_worker}
            ),
            # No worker restarts: a rank lost mid-round fails the run; resume from the last checkpoint.
            run_config=RunConfig(
                name=f"metaray-sharded-{cfg.name}",
                worker_runtime_env={"env_vars": WORKER_ENV},
                storage_path=tempfile.gettempdir() + "/metaray-train",
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metaray-sharded")
        self._fit = self._pool.submit(trainer.fit)
        self.aggregator: MetaAggregator | None = None

    def _call(self, name: str, per_rank: list[tuple]) -> list:
        """Run `name` on every rank (rank r gets `per_rank[r]`); the ranks' return values."""
        seq = ray.get(self.mailbox.post.remote(name, per_rank))
        pending = self.mailbox.collect.remote(seq, self.world)
        while not ray.wait([pending], timeout=1.0)[0]:
            if self._fit.done():
                raise ShardedModeError(f"the sharded workers stopped during {name!r}: {self._fit_error()}")
        return ray.get(pending)

    def _fit_error(self) -> str:
        error = self._fit.exception()
        return f"{type(error).__name__}: {error}" if error else "the Ray Train run ended"

    def _same(self, name: str, *args) -> list:
        return self._call(name, [args] * self.world)

    def init_prompt(self, prompt_cfg: PromptConfig | None = None) -> torch.Tensor:
        return self._same("init_prompt", prompt_cfg)[0]

    def start(self, meta_prompt: torch.Tensor, state: dict | None = None) -> None:
        self.aggregator = MetaAggregator(meta_prompt, self.cfg.meta)
        if state is not None:
            self.aggregator.load_state_dict(state)

    def round(self, specs: list[TaskSpec]) -> dict[str, float]:
        w = self.world
        if len(specs) % w:
            raise ShardedModeError(f"{len(specs)} tasks do not divide among {w} sharded workers")
        theta = self.aggregator.get_meta_prompt()
        by_rank = self._call("adapt", [(theta, specs[r::w]) for r in range(w)])
        results = [by_rank[i % w][i // w] for i in range(len(specs))]  # task order, as in actor mode
        return self.aggregator.step(*results)

    def meta_prompt(self) -> torch.Tensor:
        return self.aggregator.get_meta_prompt()

    def aggregator_state(self) -> dict:
        return self.aggregator.state_dict()

    def evaluate(self, units: list[EvalUnit], steps, inner, heads, done=None) -> list[EvalResult]:
        """Units with a prompt and units without run different numbers of passes, so each
        group is dealt out separately, padded to a multiple of W."""
        results: list[EvalResult | None] = [None] * len(units)
        for prompted in (True, False):
            index = [i for i, (init, _) in enumerate(units) if (init is not None) == prompted]
            if not index:
                continue
            _check_one_shape([units[i][1] for i in index])
            padded = index + [index[-1]] * (-len(index) % self.world)
            shares = [([units[i] for i in padded[r :: self.world]], steps, inner, heads) for r in range(self.world)]
            by_rank = self._call("evaluate", shares)
            for j, i in enumerate(index):
                results[i] = by_rank[j % self.world][j // self.world]
            if done is not None:
                done(len(index))
        return results

    def backbone_digests(self) -> list[str]:
        return self._same("backbone_digest")[:1]  # one model, whichever rank assembles it

    def partitions(self) -> list[dict[str, int]]:
        """Per rank: elements of the backbone held locally, the total, and whole right now."""
        return self._same("partition")

    def memory(self) -> list[dict]:
        return self._same("memory")

    def shutdown(self) -> None:
        if not self._fit.done():
            self.mailbox.post.remote("stop", [])
            # A failed run was already reported by the call that saw it.
            with contextlib.suppress(Exception):
                self._fit.result(timeout=60)
        self._pool.shutdown(wait=False)
        ray.kill(self.mailbox)


def _check_one_shape(specs: list[TaskSpec]) -> None:
    shapes = {(s.family, s.support_family, s.n_way, s.k_shot, s.q_query) for s in specs}
    if len(shapes) > 1:
        raise ShardedModeError(
            f"sharded evaluation runs tasks in lockstep and needs one episode shape, got {sorted(shapes)}; "
            "evaluate this checkpoint in actor mode (sharded.enabled=false): checkpoints are the same format"
        )
