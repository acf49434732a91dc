"""Outer pseudo-gradients and the meta step.

Both outer algorithms reduce to "mean of per-task pseudo-gradients, then any torch
optimizer", so the aggregator never needs to know which one runs:

- Reptile (Nichol et al. 2018, Alg. 2, batched): g_i = θ − φ_i. With SGD at lr ε the
  update is θ ← θ + ε · mean_i(φ_i − θ).
- First-order MAML (Finn et al. 2017, §5.2): g_i = ∇_φ L_query(φ) at φ = φ_i.
- Multi-task (joint training, SPoT-style transfer; Vu et al. 2022): g_i = ∇_θ L_task(θ),
  i.e. first-order MAML with zero inner steps.
- R2-D2 (Bertinetto et al. 2019), the head-matched objective: g_i = ∇_θ L_query(θ) where
  the query set is scored by a ridge-regression head fitted in closed form on the support
  set under θ, so the meta-gradient reaches θ through the fitted head (and through the
  support's embeddings) as a linear head fitted at test would use them. The inner loop is
  the closed-form fit; the prompt takes no inner steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from metaray.core.adapt import InnerConfig, LossFn, adapt

OUTER_ALGORITHMS = ("reptile", "fomaml", "multitask", "r2d2")
OUTER_OPTIMIZERS = ("sgd", "adam")
QUERY_HEADS = ("proto", "ridge")
# the algorithms whose pseudo-gradient is a gradient of the query loss at θ (no inner loop)
AT_META_PROMPT = ("multitask", "r2d2")


@dataclass(frozen=True)
class QueryObjective:
    """What the query loss scores: the query set against the support's prototypes
    (`proto`) or through a ridge head fitted on the support in closed form (`ridge`,
    penalty `ridge_lambda`), plus `consistency` x the mean squared distance between each
    input's prompted and unprompted embedding (keeps a prompt meta-trained on a few
    domains from moving the embedding away from what transfers)."""

    head: str = "proto"
    ridge_lambda: float = 1.0
    consistency: float = 0.0

    def __post_init__(self) -> None:
        if self.head not in QUERY_HEADS:
            raise ValueError(f"query head must be one of {QUERY_HEADS}, got {self.head!r}")
        if self.ridge_lambda <= 0 or self.consistency < 0:
            raise ValueError(f"need ridge_lambda > 0 and consistency >= 0, got {self.ridge_lambda}, {self.consistency}")


def query_objective(algorithm: str, ridge_lambda: float = 1.0, consistency: float = 0.0) -> QueryObjective:
    """The query objective `algorithm` takes its gradient of: R2-D2's is head-matched."""
    return QueryObjective("ridge" if algorithm == "r2d2" else "proto", ridge_lambda, consistency)


def reptile_pseudo_gradient(meta_prompt: torch.Tensor, adapted_prompt: torch.Tensor) -> torch.Tensor:
    """g = θ − φ, shape (P, D)."""
    return (meta_prompt - adapted_prompt).detach()


def query_gradient(adapted_prompt: torch.Tensor, query_loss_fn) -> tuple[torch.Tensor, float]:
    """∇_φ L_query(φ), shape (P, D), and the loss value (the FOMAML pseudo-gradient)."""
    phi = adapted_prompt.detach().clone().requires_grad_(True)
    loss = query_loss_fn(phi)
    (grad,) = torch.autograd.grad(loss, phi)
    return grad.detach(), float(loss.detach())


@dataclass
class TaskUpdate:
    """One task's contribution to a meta-round: g_i, shape (P, D), and its losses."""

    pseudo_grad: torch.Tensor
    support_loss: float  # mean inner-loop support loss (before each step); the task loss for multitask
    query_loss: float  # query loss at φ_i (at θ for multitask)


def task_pseudo_gradient(
    algorithm: str,
    meta_prompt: torch.Tensor,
    support_loss_fn: LossFn,
    query_loss_fn: Callable[[torch.Tensor], torch.Tensor],
    inner: InnerConfig,
) -> TaskUpdate:
    """g_i for one task: φ_i ← θ, `inner.steps` steps on L_support(φ_i), then
    θ − φ_i (reptile), ∇_φ L_query(φ_i) (fomaml), or ∇_θ L_query(θ) with no inner loop
    (multitask; r2d2, whose `query_loss_fn` fits its head in closed form, see
    `query_objective`). `support_loss_fn(params, step)` as in `adapt`; `query_loss_fn(prompt)`."""
    if algorithm not in OUTER_ALGORITHMS:
        raise ValueError(f"meta algorithm must be one of {OUTER_ALGORITHMS}, got {algorithm!r}")
    if algorithm in AT_META_PROMPT:
        grad, loss = query_gradient(meta_prompt, query_loss_fn)
        return TaskUpdate(grad, loss, loss)
    result = adapt({"prompt": meta_prompt}, support_loss_fn, inner)
    support_loss = sum(result.losses) / max(len(result.losses), 1)
    phi = result.adapted_prompt
    if algorithm == "fomaml":
        grad, loss = query_gradient(phi, query_loss_fn)
    else:
        grad = reptile_pseudo_gradient(meta_prompt, phi)
        with torch.no_grad():
            loss = float(query_loss_fn(phi))
    return TaskUpdate(grad, support_loss, loss)


@dataclass
class PartialSum:
    """Σ over some tasks of g_i and of their losses (float64): what a sub-aggregator of
    the aggregation tree sends up instead of one pseudo-gradient per task."""

    grad_sum: torch.Tensor
    tasks: int
    support_loss_sum: float
    query_loss_sum: float

    def mean(self) -> torch.Tensor:
        """Σ g_i / n as float32."""
        return (self.grad_sum / self.tasks).float()


def partial_sum(parts: Sequence[TaskUpdate | PartialSum]) -> PartialSum:
    """The sum of task updates and/or partial sums, accumulated in float64: exact (so the
    same in any grouping and order) while the float32 values at one position span under
    2^29 in magnitude, and within float32 rounding beyond. The aggregation tree's per-node
    sums therefore give the same θ as the flat mean."""
    if not parts:
        raise ValueError("partial_sum needs at least one task update or partial sum")
    grad, tasks, support, query = None, 0, 0.0, 0.0
    for part in parts:
        if isinstance(part, PartialSum):
            g, n, s, q = part.grad_sum, part.tasks, part.support_loss_sum, part.query_loss_sum
        else:
            g, n, s, q = part.pseudo_grad, 1, part.support_loss, part.query_loss
        g = g.double()
        if grad is not None and g.shape != grad.shape:
            raise ValueError(f"pseudo-gradients disagree in shape: {tuple(grad.shape)} and {tuple(g.shape)}")
        grad = g.clone() if grad is None else grad + g
        tasks, support, query = tasks + n, support + s, query + q
    return PartialSum(grad, tasks, support, query)


def mean_pseudo_gradient(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over tasks of (P, D) pseudo-gradients: `partial_sum`'s float64 sum over n."""
    return partial_sum([TaskUpdate(g, 0.0, 0.0) for g in grads]).mean()


def make_outer_optimizer(meta_prompt: torch.nn.Parameter, name: str, lr: float, momentum: float = 0.0):
    """Any torch optimizer works; these two are the ones configs can name."""
    if name == "sgd":
        return torch.optim.SGD([meta_prompt], lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam([meta_prompt], lr=lr)
    raise ValueError(f"outer optimizer must be one of {OUTER_OPTIMIZERS}, got {name!r}")


def outer_step(meta_prompt: torch.nn.Parameter, optimizer: torch.optim.Optimizer, grad: torch.Tensor) -> None:
    """Write the mean pseudo-gradient into θ.grad and step the outer optimizer."""
    if grad.shape != meta_prompt.shape:
        raise ValueError(f"pseudo-gradient shape {tuple(grad.shape)} != meta prompt {tuple(meta_prompt.shape)}")
    optimizer.zero_grad(set_to_none=True)
    meta_prompt.grad = grad.to(meta_prompt.dtype).clone()
    optimizer.step()
