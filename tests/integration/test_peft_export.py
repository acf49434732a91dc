"""A served task exported as a PEFT prompt-tuning adapter (a deep prompt of every layer:
a prefix-tuning adapter) loads with `PeftModel.from_pretrained` on the same backbone and
gives the same embeddings."""

import json

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel

from metaray.config import ModelConfig, PromptConfig
from metaray.models import PromptedEncoder, load_backbone, resolve_backbone
from metaray.serving.peft_export import ExportError, export_peft
from metaray.serving.store import TaskVersion
from metaray.serving.tasks import task_logits

pytestmark = pytest.mark.integration
TEXTS = ["I lost my card yesterday", "what is my balance", "send 20 dollars to my sister please"]


def task(encoder: PromptedEncoder) -> TaskVersion:
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, encoder.embedding_table.shape[0], (6,), generator=generator)
    prompt = encoder.embedding_table[rows].detach().clone()  # (6, 384), like a vocab-initialised φ
    head = {"head_weight": torch.randn(3, 384, generator=generator), "head_bias": torch.randn(3, generator=generator)}
    tensors = {"prompt": prompt, "prototypes": torch.eye(3, 384), **head}
    return TaskVersion("t", 1, tensors, {"labels": ["a", "b", "c"]})


def test_exported_adapter_embeds_like_metaray(tmp_path):
    cfg = ModelConfig(prompt_position="first", max_length=32)
    tokenizer, model = load_backbone(cfg)
    encoder = PromptedEncoder(cfg, tokenizer, model)
    exported = task(encoder)
    where = resolve_backbone(cfg).where
    out = export_peft(exported, encoder, where, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(where), str(out)).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        states = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    p = exported.tensors["prompt"].shape[0]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = F.normalize((states[:, p:] * mask).sum(1) / mask.sum(1), dim=-1)
    with torch.no_grad():
        ours = encoder.embed(TEXTS, exported.tensors["prompt"])
    torch.testing.assert_close(pooled, ours, atol=1e-5, rtol=0)
    without_prompt = encoder.encode(TEXTS, None)
    assert (ours - without_prompt).abs().max() > 1e-2, "the prompt changes nothing: the comparison proves nothing"
    # the head the task answers with travels with it: the served logits from the exported files
    head, meta = load_file(str(out / "metaray_head.safetensors")), json.loads((out / "labels.json").read_text())
    assert meta["head"] == "probe" and meta["labels"] == ["a", "b", "c"]
    served = task_logits(exported.tensors, ours, encoder.cfg.scale)
    torch.testing.assert_close(task_logits(head, pooled, meta["scale"]), served, atol=1e-4, rtol=0)


def test_a_prompt_after_cls_is_refused_with_the_setting_to_change(tmp_path):
    cfg = ModelConfig(max_length=32)  # default: the prompt after [CLS]
    encoder = PromptedEncoder(cfg, *load_backbone(cfg))
    with pytest.raises(ExportError, match="model.prompt_position=first"):
        export_peft(task(encoder), encoder, resolve_backbone(cfg).where, tmp_path / "adapter")


def test_a_deep_prompt_of_every_layer_exports_as_prefix_tuning_with_the_same_embeddings(tmp_path):
    cfg = ModelConfig(prompt_position="first", max_length=32)
    tokenizer, model = load_backbone(cfg)
    encoder = PromptedEncoder(cfg, tokenizer, model, depth=6)
    generator = torch.Generator().manual_seed(0)
    prompt = encoder.init_prompt(PromptConfig(length=4, init="vocab"))
    prompt = prompt + 0.5 * torch.randn(prompt.shape, generator=generator)  # every part moved, as adapted
    exported = TaskVersion("t", 1, {"prompt": prompt, "prototypes": torch.eye(3, 384)}, {"labels": ["a", "b", "c"]})
    where = resolve_backbone(cfg).where
    out = export_peft(exported, encoder, where, tmp_path / "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(where), str(out)).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        states = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        ours = encoder.embed(TEXTS, prompt)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(pooled, ours, atol=1e-5, rtol=0)
    shallow = PromptedEncoder(cfg, tokenizer, model).encode(TEXTS, prompt[:4])
    assert (ours - shallow).abs().max() > 1e-2, "the deep parts change nothing: the comparison proves nothing"
