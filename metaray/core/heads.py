"""Per-task heads on L2-normalised sentence embeddings.

Prototype head (Snell et al. 2017) with cosine similarity, a linear probe
(multinomial logistic regression, L-BFGS) initialised from the prototypes, as the
Proto-MAML head of Triantafillou et al. 2020, and a ridge-regression head fitted in
closed form, differentiable in the embeddings (R2-D2, Bertinetto et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, D) normalised class means of (N, D) embeddings with labels in [0, C)."""
    sums = torch.zeros(n_classes, embeddings.shape[1], dtype=embeddings.dtype).index_add(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).unsqueeze(1)
    return F.normalize(sums / counts, dim=-1)


def cosine_logits(embeddings: torch.Tensor, protos: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, C) scaled cosine similarities; `embeddings` (N, D) already normalised."""
    return scale * embeddings @ protos.T


def leave_one_out_loss(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int, scale: float) -> torch.Tensor:
    """Prototypical loss on a support set, each example scored against its own class's
    prototype computed without it (where the class has another example), so the loss
    does not reward memorising single points. Differentiable in `embeddings`."""
    sums = torch.zeros(n_classes, embeddings.shape[1], dtype=embeddings.dtype).index_add(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=n_classes).to(embeddings.dtype)
    logits = scale * embeddings @ F.normalize(sums / counts.clamp(min=1).unsqueeze(1), dim=-1).T
    own_count = counts[labels]
    has_other = own_count > 1
    own_sum = sums[labels] - embeddings * has_other.unsqueeze(1)
    own_proto = F.normalize(own_sum / (own_count - has_other.to(embeddings.dtype)).unsqueeze(1), dim=-1)
    own_logit = scale * (embeddings * own_proto).sum(-1)
    logits = logits.scatter(1, labels.unsqueeze(1), own_logit.unsqueeze(1))
    return F.cross_entropy(logits, labels)


@dataclass(frozen=True)
class LinearHead:
    """logits = scale · (x Wᵀ + b); W (C, D), b (C,)."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: float

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * (embeddings @ self.weight.T + self.bias)


def fit_linear_probe(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    scale: float,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
    soft: SoftTargets | None = None,
) -> LinearHead:
    """Logistic regression on frozen (N, D) embeddings, started at the prototypes; with
    `soft`, plus its weighted soft-label term (a teacher's, `core.distill`)."""
    x = embeddings.detach().float()
    weight = prototypes(x, labels, n_classes).clone().requires_grad_(True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(scale * (x @ weight.T + bias), labels) + weight_decay * weight.pow(2).sum()
        if soft is not None:
            loss = loss + soft.loss(scale * (soft.embeddings @ weight.T + bias))
        loss.backward()
        return loss

    optimizer.step(closure)
    return LinearHead(weight.detach(), bias.detach(), scale)


@dataclass(frozen=True)
class SoftTargets:
    """Soft labels (M, C) for (M, D) embeddings: the term `weight` · T² · CE(targets,
    softmax(logits / T)) of knowledge distillation (Hinton et al. 2015, §2; T² keeps the
    gradients' size independent of the temperature T)."""

    embeddings: torch.Tensor
    targets: torch.Tensor
    temperature: float
    weight: float

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, self.targets, self.temperature, self.weight)


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float, weight: float) -> torch.Tensor:
    """weight · T² · CE(targets, softmax(logits / T)) for (M, C) logits and soft targets."""
    t = temperature
    return weight * t * t * F.cross_entropy(logits / t, targets)


def ridge_head(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int, lam: float) -> torch.Tensor:
    """R2-D2's head (Bertinetto et al. 2019, eq. 4-5): W = Xᵀ(XXᵀ + λI)⁻¹Y, the ridge
    regression of one-hot targets Y (N, C) on (N, D) embeddings X, in the Woodbury form
    whose solve is N x N (N support examples < D). Returns W, shape (D, C); the solve is
    differentiable, so a loss on query logits X_q W reaches the embeddings of the support."""
    if lam <= 0:
        raise ValueError(f"the ridge penalty must be > 0, got {lam}")
    x = embeddings
    targets = F.one_hot(labels, n_classes).to(x.dtype)
    gram = x @ x.T + lam * torch.eye(x.shape[0], dtype=x.dtype)
    return x.T @ torch.linalg.solve(gram, targets)


def ridge_leave_one_out_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int, lam: float, scale: float
) -> torch.Tensor:
    """Cross-entropy of each support example scored by the ridge head fitted on the others,
    in closed form: with A = XXᵀ + λI, the leave-one-out prediction of example i is
    y_i − (A⁻¹Y)_i / (A⁻¹)_ii (the ridge regression's exact LOO identity). The inner loss
    matched to `ridge_head`, differentiable in the (N, D) embeddings; a class with one
    example has nothing left to fit it, so its LOO score says how far it sits from the rest."""
    x = embeddings
    targets = F.one_hot(labels, n_classes).to(x.dtype)
    inverse = torch.linalg.inv(x @ x.T + lam * torch.eye(x.shape[0], dtype=x.dtype))
    loo = targets - (inverse @ targets) / torch.diagonal(inverse).unsqueeze(1)
    return F.cross_entropy(scale * loo, labels)
