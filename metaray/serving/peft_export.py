"""Export a served task as a PEFT adapter.

    OUT/adapter_config.json        PromptTuningConfig (feature extraction, P virtual tokens), or
                                   PrefixTuningConfig for a deep prompt of every layer
    OUT/adapter_model.safetensors  {"prompt_embeddings": φ (P, D)}, or for the deep prompt each
                                   layer's keys and values at the prompt positions (P, L·2·D)
    OUT/metaray_head.safetensors   {"prototypes": (C, D)} and, where the task has one, its linear
                                   head {"head_weight": (C, D), "head_bias": (C,)}; OUT/labels.json:
                                   the labels, the logits' scale and the head the task answers with

`PeftModel.from_pretrained(AutoModel.from_pretrained(BACKBONE), OUT)` then computes the
same hidden states as metaray for the text positions. PEFT puts the virtual tokens
first, so only tasks whose backbone reads the prompt first export exactly:
`model.prompt_position=first`, or a backbone without a leading [CLS]/BOS token.

A deep prompt (`prompt.depth`) replaces the prompt positions' states before layers
1 .. d − 1. Where it does so before every layer (d = the backbone's layers), those states
never depend on the text, so each layer's keys and values there are constants: exactly
what PEFT's prefix tuning feeds each layer. A shallower deep prompt leaves the prompt
states of its upper layers to the text, which no PEFT adapter can hold: it is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from metaray.errors import MetarayError
from metaray.models import PromptedEncoder
from metaray.models.deep import transformer_layers
from metaray.serving.store import TaskVersion

HEAD_TENSORS = ("prototypes", "head_weight", "head_bias")


class ExportError(MetarayError, ValueError):
    """A task that cannot be exported as asked; the message says why."""


def export_peft(task: TaskVersion, encoder: PromptedEncoder, backbone: str, out: str | Path) -> Path:
    """Write the adapter for `task` (served with `encoder`) into `out`; returns it."""
    from peft import PrefixTuningConfig, PromptTuningConfig

    if encoder.pool_size > 1:
        raise ExportError(
            f"this task's prompt is a pool of {encoder.pool_size} prompts mixed per text (prompt.pool_size), and a "
            "PEFT adapter holds one prompt for every text; export tasks of a checkpoint with prompt.pool_size=1"
        )
    if encoder.n_prefix:
        raise ExportError(
            "PEFT prompt tuning puts the virtual tokens first, but this backbone reads the prompt after its "
            "leading special token; meta-train with model.prompt_position=first to export tasks"
        )
    prompt = task.tensors["prompt"].float().contiguous()
    model_config = encoder.model.config
    adapter, kind = prompt, PromptTuningConfig
    if encoder.depth > 1:
        adapter, kind = prefix_key_values(encoder, prompt), PrefixTuningConfig
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind(
        task_type="FEATURE_EXTRACTION",
        num_virtual_tokens=prompt.shape[0] // encoder.depth,
        token_dim=prompt.shape[1],
        num_transformer_submodules=1,
        num_attention_heads=model_config.num_attention_heads,
        num_layers=model_config.num_hidden_layers,
        base_model_name_or_path=backbone,
    ).save_pretrained(str(out))
    save_file({"prompt_embeddings": adapter.contiguous()}, str(out / "adapter_model.safetensors"))
    head = {k: v.contiguous() for k, v in task.tensors.items() if k in HEAD_TENSORS}
    save_file(head, str(out / "metaray_head.safetensors"))
    answers_with = "probe" if "head_weight" in head else "proto"
    meta = {"labels": task.meta["labels"], "scale": encoder.cfg.scale, "head": answers_with}
    (out / "labels.json").write_text(json.dumps(meta))
    return out


def prefix_key_values(encoder: PromptedEncoder, prompt: torch.Tensor) -> torch.Tensor:
    """(P, L·2·D): per prompt position, each layer's key then value (PEFT prefix tuning's
    layout) of a deep prompt of every layer; refused for other depths and models."""
    layers = transformer_layers(encoder.model)
    if encoder.depth != len(layers) or encoder.cfg.pool_prompt:
        raise ExportError(
            f"this task's prompt is deep to layer {encoder.depth} of {len(layers)}: above it the prompt's states "
            "depend on the text, which no PEFT adapter holds (prefix tuning feeds every layer constant keys and "
            f"values); export tasks of a checkpoint with prompt.depth=1 or {len(layers)} and model.pool_prompt=false"
        )
    attention = [getattr(getattr(layer, "attention", None), "self", None) for layer in layers]
    if not all(hasattr(a, "key") and hasattr(a, "value") for a in attention):
        raise ExportError("PEFT prefix export of a deep prompt is built for BERT-like encoders (attention.self.key)")
    with torch.no_grad():
        states = encoder.layer_inputs(prompt)
        states = [h.to(encoder.device) for h in states]
        pairs = [torch.cat([a.key(h), a.value(h)], -1) for a, h in zip(attention, states, strict=True)]
    return torch.cat(pairs, -1).float().cpu()
