"""The meta-aggregator: owns θ and the outer optimizer (runs inside a Ray actor).

It averages the tasks' pseudo-gradients and steps θ with any torch optimizer; it
does not know whether they came from Reptile, first-order MAML or multi-task.
"""

from __future__ import annotations

import torch

from metaray.config import MetaConfig
from metaray.core import PartialSum, make_outer_optimizer, outer_step, partial_sum
from metaray.distributed.adapter import TaskResult


class MetaAggregator:
    def __init__(self, meta_prompt: torch.Tensor, meta: MetaConfig) -> None:
        self.meta_prompt = torch.nn.Parameter(meta_prompt.detach().clone().float())
        self.optimizer = make_outer_optimizer(
            self.meta_prompt, meta.outer_optimizer, meta.outer_lr, meta.outer_momentum
        )
        self.round = 0

    def get_meta_prompt(self) -> torch.Tensor:
        """θ, shape (P, D); a copy, so callers cannot alias the optimizer's tensor."""
        return self.meta_prompt.detach().clone()

    def step(self, *results: TaskResult) -> dict[str, float]:
        """θ ← outer_optimizer.step(mean_i g_i); returns the round's metrics."""
        return self.step_partials(partial_sum(results))

    def step_partials(self, *partials: PartialSum) -> dict[str, float]:
        """The same step from the sub-aggregators' partial sums (`meta.aggregation: tree`)."""
        total = partial_sum(partials)
        grad = total.mean()
        outer_step(self.meta_prompt, self.optimizer, grad)
        self.round += 1
        return {
            "round": self.round,
            "tasks": total.tasks,
            "support_loss": total.support_loss_sum / total.tasks,
            "query_loss": total.query_loss_sum / total.tasks,
            "pseudo_grad_norm": float(grad.norm()),
        }

    def state_dict(self) -> dict:
        return {"meta_prompt": self.get_meta_prompt(), "optimizer": self.optimizer.state_dict(), "round": self.round}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.meta_prompt.copy_(state["meta_prompt"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.round = int(state["round"])


class NodeAggregator:
    """One node's sub-aggregator (`meta.aggregation: tree`): it sums the pseudo-gradients
    of the tasks that node's adapters ran, so one (P, D) tensor per node, not one per
    task, travels to the root aggregator."""

    def sum(self, *results: TaskResult) -> PartialSum:
        return partial_sum(results)
