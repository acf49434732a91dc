"""A frozen Hugging Face encoder that reads a soft prompt.

The prompt (P, D) is inserted after the tokenizer's leading special token ([CLS]),
or first where there is none (decoder LMs), the sequence is encoded by the frozen
backbone, and the sentence embedding is the mean of the output states over the real
tokens (optionally the prompt positions too), L2-normalised as all-MiniLM-L6-v2 was
trained. The backbone runs on its own device (a GPU where the actor has one);
embeddings come back on the CPU.

A deep prompt (`prompt.depth` d > 1) also replaces the prompt positions' hidden states
before each of the layers 1 .. d − 1 with P vectors of their own (as VPT-deep, Jia et al.
2022; at every layer this is prefix tuning / P-tuning v2 with each layer's keys and
values those of a state: `metaray.serving.peft_export` writes them so). θ is (d·P, D),
the input prompt's rows first, then each layer's. Those rows start as the states the
input prompt has at their layer in front of an empty text, so a deep θ₀ begins close
to the shallow one.

Prompts generated per input (`prompt.pool_size` n > 1, `metaray.models.prompt_pool`): θ
is a pool of n input prompts with a key each, and every text reads its own mix of them,
weighted by its frozen embedding's similarity to the keys (computed once per text and kept).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from metaray.config import ModelConfig, PromptConfig
from metaray.core.augment import TextEdits, edited_copies
from metaray.core.prompt import initial_prompt
from metaray.models.backbone import load_backbone
from metaray.models.deep import forward_hooks, hooks_lock, layer_hooks, prompted_layers, split_depth
from metaray.models.prompt_pool import initial_keys, mixed_prompts
from metaray.models.synonyms import EmbeddingNeighbours

FROZEN_KEPT = 100_000  # texts whose unprompted embedding a pool keeps (about 150 MB at D = 384)


class PromptedEncoder:
    """Sentence embeddings (N, D) from a frozen encoder with an optional soft prompt."""

    def __init__(
        self, cfg: ModelConfig, tokenizer=None, model=None, depth: int = 1, pool_size: int = 1, temperature: float = 0.1
    ) -> None:
        if model is None:
            tokenizer, model = load_backbone(cfg)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.model = model
        self.depth = depth
        if pool_size > 1 and depth > 1:
            raise ValueError(f"a prompt pool mixes input prompts; pool_size={pool_size} takes depth 1, got {depth}")
        self.pool_size, self.temperature = pool_size, temperature
        self._frozen: dict[str, torch.Tensor] = {}  # text -> its embedding without a prompt (a pool's queries)
        self.layers = prompted_layers(model, cfg.backbone, depth)  # their input prompt states are replaced
        self._hooks = hooks_lock(bool(self.layers))
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
        """θ₀, shape (depth·P, D): the input prompt per `prompt.init`, then (deep) each
        prompted layer's rows: the input prompt's states at that layer before an empty text."""
        table = self.embedding_table.detach().cpu()
        ids = self.token_ids(cfg.text)
        theta = initial_prompt(cfg.init, cfg.length, table, ids, cfg.seed)
        if self.pool_size > 1:  # each prompt of the pool drawn with its own seed, then the keys
            n = self.pool_size
            pool = [initial_prompt(cfg.init, cfg.length, table, ids, cfg.seed + i) for i in range(1, n)]
            return torch.cat([theta, *pool, initial_keys(n, table.shape[1], cfg.seed + n)])
        if not self.layers:
            return theta
        return torch.cat([theta, *self._states_before_empty_text([theta])[1 : self.depth]])

    def layer_inputs(self, prompt: torch.Tensor) -> list[torch.Tensor]:
        """The (P, D) states the prompt positions enter each layer with, whatever the text:
        the embedding layer's output for the input prompt (at its positions), then each
        deep part (a prompt of every layer's depth: nothing the text does reaches them)."""
        parts = split_depth(prompt, self.depth)
        return [self._states_before_empty_text(parts)[0], *(part.float() for part in parts[1:])]

    @torch.no_grad()
    def _states_before_empty_text(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """(P, D) per layer input (the embeddings' output first): the prompt positions'
        states, under the prompt's `parts`, in front of an empty text."""
        out, _ = self._forward([""], parts, output_hidden_states=True)
        k, p = self.n_prefix, parts[0].shape[0]
        return [states[0, k : k + p].float().cpu() for states in out.hidden_states]

    def embed(self, texts: list[str] | tuple[str, ...], prompt: torch.Tensor | None) -> torch.Tensor:
        """(B, D) normalised embeddings; differentiable in `prompt` (depth·P, D; a pool's n·P + n)."""
        out, pool_mask = self._forward(texts, self.prompt_parts(texts, prompt))
        states = out.last_hidden_state  # (B, P+T, D)
        weights = pool_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), dim=-1).cpu()  # fp32 for the heads, whatever the backbone computes in

    def prompt_parts(self, texts, prompt: torch.Tensor | None) -> list[torch.Tensor]:
        """The prompt's parts for `texts`: none; its depth's (P, D) parts; or (a pool) each
        text's own mixed input prompt, (B, P, D)."""
        if prompt is None:
            return []
        if self.pool_size == 1:
            return split_depth(prompt, self.depth)
        return [mixed_prompts(prompt, self.pool_size, self.frozen_embeddings(texts), self.temperature)]

    @torch.no_grad()
    def frozen_embeddings(self, texts) -> torch.Tensor:
        """(B, D) the texts' embeddings without a prompt, each computed once and kept (up to
        FROZEN_KEPT texts): the queries a prompt pool weighs its prompts by."""
        kept, fresh = self._frozen, {}  # another thread may start the store afresh: read this one
        new = list(dict.fromkeys(t for t in texts if t not in kept))
        if new:
            fresh = dict(zip(new, self.embed(new, None), strict=True))
            if len(kept) + len(fresh) > FROZEN_KEPT:
                self._frozen = fresh
            else:
                kept.update(fresh)
        return torch.stack([fresh[t] if t in fresh else kept[t] for t in texts])

    def _forward(self, texts, parts: list[torch.Tensor], **kwargs):
        """(the backbone's output, the pooling mask) for `texts` with
        the prompt's `parts` (the input's in the embeddings, the others before their layers)."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt"
        )
        tokens = self.model.get_input_embeddings()(batch["input_ids"].to(self.device))  # (B, T, D)
        mask = batch["attention_mask"].to(self.device)
        pool_mask = mask
        if parts:
            n, p, k = tokens.shape[0], parts[0].shape[-2], self.n_prefix
            soft = parts[0].to(self.device, tokens.dtype)  # (P, D) for every text, or (B, P, D) its own
            soft = soft if soft.dim() == 3 else soft.unsqueeze(0).expand(n, -1, -1)
            tokens = torch.cat([tokens[:, :k], soft, tokens[:, k:]], 1)
            prompt_mask = torch.ones(n, p, dtype=mask.dtype, device=self.device)
            mask = torch.cat([mask[:, :k], prompt_mask, mask[:, k:]], 1)  # (B, P+T)
            if not self.cfg.pool_prompt:  # pool over the sentence's own tokens only
                prompt_mask = torch.zeros_like(prompt_mask)
            pool_mask = torch.cat([pool_mask[:, :k], prompt_mask, pool_mask[:, k:]], 1)
        with forward_hooks(self._hooks, layer_hooks(self.layers, parts, self.n_prefix, self.device), pre=True):
            return self.model(inputs_embeds=tokens, attention_mask=mask, **kwargs), pool_mask

    @functools.cached_property
    def neighbours(self) -> EmbeddingNeighbours:
        """The synonyms `augment.synonyms` draws: each word's nearest words in this
        backbone's input-embedding table (built on first use)."""
        return EmbeddingNeighbours(self.tokenizer, self.embedding_table)

    def copies(self, texts, views: int, edits: TextEdits, rng: np.random.Generator) -> list[str]:
        """`views` edited copies of each text (`core.augment.edited_copies`), synonyms from
        this backbone's vocabulary."""
        return edited_copies(list(texts), views, edits, rng, self.neighbours if edits.synonyms else None)

    def embed_views(self, texts, prompt: torch.Tensor | None, views: int, rng: np.random.Generator, edits: TextEdits):
        """((1 + views)·B, D): the texts, then `views` edited copies of each (copy v of text
        i at row (1 + v)·B + i, drawn from `rng`), in one forward pass."""
        texts = list(texts)
        return self.embed(texts + self.copies(texts, views, edits, rng), prompt)

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
