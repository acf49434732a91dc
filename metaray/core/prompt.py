"""The soft prompt: P trainable virtual-token embeddings of width D (Lester et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

PROMPT_INITS = ("random", "text", "vocab")


class SoftPrompt(torch.nn.Module):
    """A (P, D) matrix prepended (or inserted) into a frozen backbone's token embeddings.

    The three initialisations of Lester et al. 2021, §3.2: random (scaled to the
    embedding table's spread), embeddings of a text (repeated or cut to P), and
    embeddings of P tokens sampled from the vocabulary.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"a soft prompt is (P, D); got shape {tuple(weight.shape)}")
        self.weight = torch.nn.Parameter(weight.detach().clone().float())

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, batch_size: int) -> torch.Tensor:
        """(B, P, D): the prompt repeated for every sequence in the batch."""
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)

    @classmethod
    def random(cls, length: int, embeddings: torch.Tensor, generator: torch.Generator) -> SoftPrompt:
        """N(mean, std) of the embedding table, per dimension."""
        mean, std = embeddings.float().mean(0), embeddings.float().std(0)
        noise = torch.randn(length, embeddings.shape[1], generator=generator)
        return cls(mean + noise * std)

    @classmethod
    def from_vocab(cls, length: int, embeddings: torch.Tensor, generator: torch.Generator) -> SoftPrompt:
        """P rows of the embedding table, sampled without replacement."""
        rows = torch.randperm(embeddings.shape[0], generator=generator)[:length]
        return cls(embeddings[rows])

    @classmethod
    def from_text(cls, length: int, embeddings: torch.Tensor, token_ids: Sequence[int]) -> SoftPrompt:
        """Embeddings of a text's tokens, cycled to length P."""
        if not token_ids:
            raise ValueError("prompt init 'text' needs a non-empty prompt.text")
        ids = [token_ids[i % len(token_ids)] for i in range(length)]
        return cls(embeddings[torch.tensor(ids)])


def initial_prompt(
    init: str, length: int, embeddings: torch.Tensor, text_ids: Sequence[int], seed: int
) -> torch.Tensor:
    """θ₀, shape (P, D): `init` is one of PROMPT_INITS; `text_ids` are used by "text" only."""
    generator = torch.Generator().manual_seed(seed)
    if init == "random":
        return SoftPrompt.random(length, embeddings, generator).weight.detach()
    if init == "vocab":
        return SoftPrompt.from_vocab(length, embeddings, generator).weight.detach()
    return SoftPrompt.from_text(length, embeddings, text_ids).weight.detach()
