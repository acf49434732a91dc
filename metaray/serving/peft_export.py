"""Export a served task as a PEFT prompt-tuning adapter.

    OUT/adapter_config.json        PromptTuningConfig (feature extraction, P virtual tokens)
    OUT/adapter_model.safetensors  {"prompt_embeddings": φ (P, D)}
    OUT/metaray_head.safetensors   {"prototypes": (C, D)} and, where the task has one, its linear
                                   head {"head_weight": (C, D), "head_bias": (C,)}; OUT/labels.json:
                                   the labels, the logits' scale and the head the task answers with

`PeftModel.from_pretrained(AutoModel.from_pretrained(BACKBONE), OUT)` then computes the
same hidden states as metaray for the text positions. PEFT puts the virtual tokens
first, so only tasks whose backbone reads the prompt first export exactly:
`model.prompt_position=first`, or a backbone without a leading [CLS]/BOS token.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from metaray.errors import MetarayError
from metaray.models import PromptedEncoder
from metaray.serving.store import TaskVersion

HEAD_TENSORS = ("prototypes", "head_weight", "head_bias")


class ExportError(MetarayError, ValueError):
    """A task that cannot be exported as asked; the message says why."""


def export_peft(task: TaskVersion, encoder: PromptedEncoder, backbone: str, out: str | Path) -> Path:
    """Write the adapter for `task` (served with `encoder`) into `out`; returns it."""
    from peft import PromptTuningConfig

    if encoder.depth > 1:
        raise ExportError(
            f"this task's prompt is deep (prompt.depth={encoder.depth}: states replaced before {encoder.depth - 1} "
            "layers), and PEFT has no adapter that replaces states (its prefix tuning feeds keys and values); "
            "export tasks of a depth-1 checkpoint"
        )
    if encoder.n_prefix:
        raise ExportError(
            "PEFT prompt tuning puts the virtual tokens first, but this backbone reads the prompt after its "
            "leading special token; meta-train with model.prompt_position=first to export tasks"
        )
    prompt = task.tensors["prompt"].float().contiguous()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_config = encoder.model.config
    PromptTuningConfig(
        task_type="FEATURE_EXTRACTION",
        num_virtual_tokens=prompt.shape[0],
        token_dim=prompt.shape[1],
        num_transformer_submodules=1,
        num_attention_heads=model_config.num_attention_heads,
        num_layers=model_config.num_hidden_layers,
        base_model_name_or_path=backbone,
    ).save_pretrained(str(out))
    save_file({"prompt_embeddings": prompt}, str(out / "adapter_model.safetensors"))
    head = {k: v.contiguous() for k, v in task.tensors.items() if k in HEAD_TENSORS}
    save_file(head, str(out / "metaray_head.safetensors"))
    answers_with = "probe" if "head_weight" in head else "proto"
    meta = {"labels": task.meta["labels"], "scale": encoder.cfg.scale, "head": answers_with}
    (out / "labels.json").write_text(json.dumps(meta))
    return out
