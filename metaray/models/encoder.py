"""A frozen Hugging Face encoder that reads a soft prompt.

The prompt (P, D) is inserted after the tokenizer's leading special token ([CLS]),
or first where there is none (decoder LMs), the sequence is encoded by the frozen
backbone, and the sentence embedding is the mean of the output states over the real
tokens (optionally the prompt positions too), L2-normalised as all-MiniLM-L6-v2 was
trained. The backbone runs on its own device (a GPU where the actor has one);
embeddings come back on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from metaray.config import ModelConfig, PromptConfig
from metaray.core.augment import TextEdits, edited_copies
from metaray.core.prompt import initial_prompt
from metaray.models.backbone import load_backbone


class PromptedEncoder:
    """Sentence embeddings (N, D) from a frozen encoder with an optional soft prompt."""

    def __init__(self, cfg: ModelConfig, tokenizer=None, model=None) -> None:
        if model is None:
            tokenizer, model = load_backbone(cfg)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.model = model
        self.embedding_table = model.get_input_embeddings().weight  # (V, D), frozen
        self.device = self.embedding_table.device
        with_special, bare = tokenizer("a")["input_ids"], tokenizer("a", add_special_tokens=False)["input_ids"]
        # 1: the prompt goes after a leading [CLS]/BOS; 0: first (also PEFT's layout)
        self.n_prefix = int(with_special[:1] != bare[:1] and cfg.prompt_position == "after_special")

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim  # the table may be partitioned (ZeRO-3)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def init_prompt(self, cfg: PromptConfig) -> torch.Tensor:
        """θ₀, shape (P, D), per `prompt.init`."""
        table = self.embedding_table.detach().cpu()
        return initial_prompt(cfg.init, cfg.length, table, self.token_ids(cfg.text), cfg.seed)

    def embed(self, texts: list[str] | tuple[str, ...], prompt: torch.Tensor | None) -> torch.Tensor:
        """(B, D) normalised embeddings; differentiable in `prompt` (P, D)."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt"
        )
        tokens = self.model.get_input_embeddings()(batch["input_ids"].to(self.device))  # (B, T, D)
        mask = batch["attention_mask"].to(self.device)
        pool_mask = mask
        if prompt is not None:
            n, p, k = tokens.shape[0], prompt.shape[0], self.n_prefix
            soft = prompt.to(self.device, tokens.dtype).unsqueeze(0).expand(n, -1, -1)
            tokens = torch.cat([tokens[:, :k], soft, tokens[:, k:]], 1)
            prompt_mask = torch.ones(n, p, dtype=mask.dtype, device=self.device)
            mask = torch.cat([mask[:, :k], prompt_mask, mask[:, k:]], 1)  # (B, P+T)
            if not self.cfg.pool_prompt:  # pool over the sentence's own tokens only
                prompt_mask = torch.zeros_like(prompt_mask)
            pool_mask = torch.cat([pool_mask[:, :k], prompt_mask, pool_mask[:, k:]], 1)
        states = self.model(inputs_embeds=tokens, attention_mask=mask).last_hidden_state  # (B, P+T, D)
        weights = pool_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), dim=-1).cpu()  # fp32 for the heads, whatever the backbone computes in

    def embed_views(self, texts, prompt: torch.Tensor | None, views: int, rng: np.random.Generator, edits: TextEdits):
        """((1 + views)·B, D): the texts, then `views` edited copies of each (copy v of text
        i at row (1 + v)·B + i, drawn from `rng`), in one forward pass."""
        texts = list(texts)
        return self.embed(texts + edited_copies(texts, views, edits, rng), prompt)

    @torch.no_grad()
    def encode(self, texts, prompt: torch.Tensor | None) -> torch.Tensor:
        """(N, D) embeddings without gradients, in batches of model.encode_batch_size."""
        if len(texts) == 0:
            return torch.zeros(0, self.hidden_size)
        # Length-sorted batches pad less; the result is returned in the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = self.cfg.encode_batch_size
        parts = [self.embed([texts[i] for i in order[j : j + size]], prompt) for j in range(0, len(order), size)]
        out = torch.empty(len(texts), self.hidden_size)
        out[torch.tensor(order)] = torch.cat(parts)
        return out
