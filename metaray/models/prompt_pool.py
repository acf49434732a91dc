"""Prompts generated per input (`prompt.pool_size` n > 1): a pool of n soft prompts with keys.

Each input's prompt is the attention-weighted mix of the pool, the weights a softmax over
the cosine similarity of the input's frozen embedding (the backbone without a prompt) to
each key, divided by `prompt.pool_temperature` (MetaPrompter, Jiang et al. 2023, on a
frozen BERT). Pool and keys are θ: meta-learned and adapted per task like a single
prompt, the keys through the weights. θ is (n·P + n, D): the n prompts' rows (prompt i at
rows i·P .. (i+1)·P − 1), then the n keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_pool(theta: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """θ (n·P + n, D) as (the pool (n, P, D), the keys (n, D)); refused, naming the shape,
    where the rows are not a pool of `size`."""
    rows = theta.shape[0]
    if rows % size or rows // size < 2:
        raise ValueError(
            f"a prompt pool of {size} prompts has {size}·(P + 1) rows (the prompts, then a key each), got "
            f"{tuple(theta.shape)}: another prompt.pool_size or prompt.length"
        )
    length = rows // size - 1
    return theta[: size * length].reshape(size, length, -1), theta[size * length :]


def initial_keys(size: int, width: int, seed: int) -> torch.Tensor:
    """(n, D) random unit keys: before meta-training no input prefers a prompt."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(size, width, generator=generator), dim=-1)


def pool_weights(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, n): each input's softmax weights over the pool, from its (B, D) frozen embedding."""
    similarity = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T
    return torch.softmax(similarity / temperature, dim=-1)


def mixed_prompts(theta: torch.Tensor, size: int, queries: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, P, D): each input's prompt, the pool mixed by its weights; differentiable in θ
    (the prompts, and the keys through the weights)."""
    pool, keys = split_pool(theta, size)
    weights = pool_weights(queries.to(keys.device), keys, temperature)
    return torch.einsum("bn,npd->bpd", weights, pool.float())
