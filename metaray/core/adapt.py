"""The inner loop: a few gradient steps on a copy of the meta prompt (θ -> φ).

Reptile (Nichol et al. 2018, Alg. 1) and first-order MAML (Finn et al. 2017, §5.2)
share this loop; they differ only in the outer pseudo-gradient (`core.outer`).
The backbone is frozen, so the prompt (and, optionally, a per-task head) is all
that moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from metaray.core.augment import TextEdits

INNER_OPTIMIZERS = ("sgd", "adam")
INNER_LOSSES = ("proto", "ridge")

# loss_fn(params, step) -> scalar loss. `params` maps names ("prompt", "head.weight",
# ...) to leaf tensors; `step` lets the loss draw a deterministic mini-batch.
LossFn = Callable[[dict[str, torch.Tensor], int], torch.Tensor]


@dataclass(frozen=True)
class InnerConfig:
    """Inner-loop settings (the per-task adaptation budget)."""

    steps: int = 4
    lr: float = 1e-2
    optimizer: str = "adam"
    batch_ways: int = 16  # classes in one inner mini-episode drawn from the support set
    batch_shots: int = 0  # support examples per class in it (0: all)
    # augmented copies of each support example as the loss's queries (0: leave-one-out), and
    # beside the support when a head is fitted at test: images' random warps, or the text
    # edits in `augment` (text needs at least one)
    views: int = 0
    augment: TextEdits = field(default_factory=TextEdits)
    # the support loss: leave-one-out against prototypes (proto) or through a ridge head (ridge,
    # matched to the r2d2 objective); ridge_lambda is the ridge head's penalty wherever one is fitted
    loss: str = "proto"
    ridge_lambda: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"inner.steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"inner.lr must be > 0, got {self.lr}")
        if self.optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner.optimizer must be one of {INNER_OPTIMIZERS}, got {self.optimizer!r}")
        if self.batch_ways < 2:
            raise ValueError(f"inner.batch_ways must be >= 2, got {self.batch_ways}")
        if self.batch_shots < 0:
            raise ValueError(f"inner.batch_shots must be >= 0, got {self.batch_shots}")
        if self.views < 0:
            raise ValueError(f"inner.views must be >= 0, got {self.views}")
        if self.loss not in INNER_LOSSES:
            raise ValueError(f"inner.loss must be one of {INNER_LOSSES}, got {self.loss!r}")
        if self.ridge_lambda <= 0:
            raise ValueError(f"inner.ridge_lambda must be > 0, got {self.ridge_lambda}")


@dataclass
class AdaptResult:
    """φ and the support losses seen on the way (loss before step i at index i)."""

    params: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)

    @property
    def adapted_prompt(self) -> torch.Tensor:
        return self.params["prompt"]


def _make_optimizer(params: list[torch.Tensor], cfg: InnerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    return torch.optim.Adam(params, lr=cfg.lr)


def adapt(
    init: dict[str, torch.Tensor],
    loss_fn: LossFn,
    cfg: InnerConfig,
    on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> AdaptResult:
    """Run `cfg.steps` optimizer steps on copies of `init`; `init` is never modified.

    `init["prompt"]` is θ, shape (P, D). Other entries (e.g. a prototype-initialised
    linear head, Proto-MAML, Triantafillou et al. 2020) are adapted alongside it.
    `on_step(i, params)` is called with detached params after i steps (i = 0..steps),
    so callers can score accuracy against the adaptation budget in one pass.
    """
    params = {name: t.detach().clone().requires_grad_(True) for name, t in init.items()}
    optimizer = _make_optimizer(list(params.values()), cfg)
    losses: list[float] = []
    for step in range(cfg.steps):
        if on_step is not None:
            on_step(step, _detached(params))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(params, step)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    if on_step is not None:
        on_step(cfg.steps, _detached(params))
    return AdaptResult(params=_detached(params), losses=losses)


def _detached(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in params.items()}
