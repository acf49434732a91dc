"""Deep prompts (`prompt.depth` d > 1): prompts inside a frozen backbone, not only at its input.

A transformer's deep prompt replaces the prompt positions' hidden states before each of
its layers 1 .. d − 1 (P-tuning v2, Liu et al. 2022); a CNN's adds a learnable map after
each of its first d − 1 stages (`metaray.models.vision`). Both are forward hooks
registered on the shared, frozen backbone for one forward pass (`forward_hooks`); a deep
model holds one lock over every pass, with hooks or without, so that no pass of another
thread (serving adapts in a thread while it classifies) sees them. This module finds the
layers, checks a depth against them and holds the hooks.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import AutoModel

from metaray.config import ConfigError, ModelConfig
from metaray.models.backbone import backbone_config

LAYER_LISTS = ("encoder.layer", "layers", "transformer.layer", "h", "encoder.layers")  # where models keep them
LOOKED_FOR = "a ModuleList of layers at " + ", ".join(LAYER_LISTS)


def check_depth(backbone: str, depth: int, parts: int, unit: str, most: int, looked_for: str) -> None:
    """Refuse a `prompt.depth` the backbone cannot take: it has no `unit` (layers,
    stages; `looked_for` says where they were looked for), or `depth` is above `most`."""
    if not parts:
        raise ConfigError(
            f"prompt.depth={depth} adds prompts inside the backbone, and model.backbone {backbone!r} has no {unit} "
            f"metaray can find ({looked_for}); set prompt.depth=1"
        )
    if depth > most:
        raise ConfigError(
            f"prompt.depth={depth}: model.backbone {backbone!r} has {parts} {unit}, so prompt.depth must be in "
            f"[1, {most}]"
        )


def transformer_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """A Hugging Face transformer's layers (of its base model: a causal LM's decoder),
    input to output; empty where none is found."""
    base = getattr(model, "base_model", model)
    for path in LAYER_LISTS:
        found = base
        for name in path.split("."):
            found = getattr(found, name, None)
        if isinstance(found, torch.nn.ModuleList):
            return list(found)
    return []


def prompted_layers(model: torch.nn.Module, backbone: str, depth: int) -> list[torch.nn.Module]:
    """The layers whose input states a prompt of `depth` replaces: 1 .. depth − 1."""
    if depth == 1:
        return []
    layers = transformer_layers(model)
    check_depth(backbone, depth, len(layers), "layers", len(layers), LOOKED_FOR)
    return layers[1:depth]


def check_text_depth(cfg: ModelConfig, depth: int) -> None:
    """Refuse, before any weights are read (the architecture is built on the meta
    device), a depth the backbone's layers cannot take."""
    if depth > 1:
        with torch.device("meta"):
            prompted_layers(AutoModel.from_config(backbone_config(cfg)), cfg.backbone, depth)


def split_depth(prompt: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """A (depth·P, D) prompt as its `depth` (P, D) parts: the input's, then each layer's."""
    if prompt.shape[0] % depth:
        raise ValueError(f"a prompt of depth {depth} has depth·P rows, got {tuple(prompt.shape)}: another depth")
    return list(prompt.split(prompt.shape[0] // depth))


def hooks_lock(deep: bool) -> threading.Lock | None:
    """The lock a model with deep prompts holds over its passes (`forward_hooks`); None
    for a model without, whose passes never carry hooks."""
    return threading.Lock() if deep else None


@contextmanager
def forward_hooks(
    lock: threading.Lock | None, hooks: Sequence[tuple[torch.nn.Module, Callable]], pre: bool = False
) -> Iterator:
    """The body runs with each (module, hook) registered, as a forward hook or (`pre`) a
    forward pre-hook with keyword arguments, the hooks removed after; under `lock` (a deep
    model's, `hooks_lock`), held whether this pass has hooks or not, so one pass at a time
    runs on the shared modules."""
    with lock or contextlib.nullcontext():
        handles = [
            module.register_forward_pre_hook(hook, with_kwargs=True) if pre else module.register_forward_hook(hook)
            for module, hook in hooks
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def replace_states(part: torch.Tensor, k: int, _module, args: tuple, kwargs: dict):
    """A layer's forward pre-hook: its input states (B, T, D) with the P prompt positions
    (from k) replaced by `part` (P, D)."""
    hidden = args[0] if args else kwargs["hidden_states"]
    soft = part.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
    hidden = torch.cat([hidden[:, :k], soft, hidden[:, k + part.shape[0] :]], 1)
    return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})


def layer_hooks(layers: list[torch.nn.Module], parts: list[torch.Tensor], k: int, device) -> list[tuple]:
    """(layer, pre-hook) pairs putting each deep part (after the input's) before its layer;
    none for a prompt of the input only (or none)."""
    deep = parts[1:]
    return [
        (layer, functools.partial(replace_states, part.to(device), k))
        for layer, part in zip(layers[: len(deep)], deep, strict=True)
    ]
