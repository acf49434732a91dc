"""The classic transfer recipe, as a few-shot baseline: fine-tune every weight of the
pretrained CNN plus a new linear layer on the support set with SGD and momentum.

Batch-norm statistics stay frozen (a handful of images cannot estimate them). The new
layer starts at zero and reads the L2-normalised pooled features, as the probe head does.
Scored after each budget in `steps`: the linear layer (`probe`) and cosine prototypes of
the fine-tuned features (`proto`). The backbone is a copy: the shared one never moves.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from metaray.core import cosine_logits, prototypes
from metaray.data import Episode
from metaray.models.vision import PromptedVisionEncoder

MOMENTUM = 0.9


def finetune_scores(
    encoder: PromptedVisionEncoder,
    episode: Episode,
    steps: tuple[int, ...],
    lr: float,
    scale: float,
    views: int = 0,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """Query accuracy (%) per head after each budget in `steps` of full-batch SGD at `lr`,
    on the support set and `views` warped copies of it per step (the data the prompts'
    loss sees with `inner.views`), drawn from (seed, step)."""
    tuned = copy.copy(encoder)
    tuned.model = copy.deepcopy(encoder.model).requires_grad_(True)  # eval mode: batch-norm statistics frozen
    head = torch.nn.Linear(tuned.hidden_size, episode.n_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD([*tuned.model.parameters(), *head.parameters()], lr=lr, momentum=MOMENTUM)
    support, labels = list(episode.support_inputs), torch.from_numpy(episode.support_labels)
    scores: dict[int, dict[str, float]] = {}
    for step in range(max(steps) + 1):
        if step in steps:
            scores[step] = _accuracy(tuned, episode, head, scale)
        if step == max(steps):
            break
        optimizer.zero_grad(set_to_none=True)
        features = tuned.embed_views(support, None, views, np.random.default_rng([seed, step]))
        F.cross_entropy(scale * head(features), labels.repeat(1 + views)).backward()
        optimizer.step()
    return scores


@torch.no_grad()
def _accuracy(encoder: PromptedVisionEncoder, episode: Episode, head: torch.nn.Linear, scale: float) -> dict:
    support = encoder.encode(list(episode.support_inputs), None)
    query = encoder.encode(list(episode.query_inputs), None)
    protos = prototypes(support, torch.from_numpy(episode.support_labels), episode.n_classes)
    labels = torch.from_numpy(episode.query_labels)
    logits = {"proto": cosine_logits(query, protos, scale), "probe": scale * head(query)}
    return {name: float((out.argmax(-1) == labels).float().mean() * 100) for name, out in logits.items()}
