"""What each task kind needs of the models layer: its backbone, its prompted model and
the scores it reports.

classify: an encoder (`AutoModel`) under `PromptedClassifier`, query accuracy per head.
qa: a causal LM with its head under `PromptedQA`, SQuAD exact match and F1.
image: an image backbone seeing a visual prompt (`PromptedVisionEncoder`) under `PromptedClassifier`.
"""

from __future__ import annotations

from metaray.config import ExperimentConfig, ModelConfig
from metaray.models.backbone import check_backbone, check_causal_lm, load_backbone, load_causal_lm
from metaray.models.causal_lm import PromptedCausalLM
from metaray.models.classifier import HEADS, PromptedClassifier
from metaray.models.encoder import PromptedEncoder
from metaray.models.image_backbone import check_image_backbone, load_image_backbone
from metaray.models.qa import QA_METRICS, PromptedQA
from metaray.models.vision import Pixels, PromptedVisionEncoder

KIND_METRICS = {"classify": HEADS, "qa": QA_METRICS, "image": HEADS}  # what `score` can report, per kind
PRIMARY_METRIC = {"classify": "proto", "qa": "f1", "image": "proto"}  # what meta-validation selects on


def check_for(kind: str, cfg: ModelConfig) -> None:
    """Fail fast (config and tokenizer, no weights) where `kind`'s backbone cannot load."""
    if kind == "image":
        check_image_backbone(cfg)
        return
    check_backbone(cfg)
    if kind == "qa":
        check_causal_lm(cfg)


def load_for(kind: str, cfg: ModelConfig):
    """(tokenizer, frozen model) for `kind`; a qa backbone that is not a causal LM is refused."""
    if kind == "image":
        return load_image_backbone(cfg)
    return load_causal_lm(cfg) if kind == "qa" else load_backbone(cfg)


def prompted_model(
    cfg: ExperimentConfig, tokenizer, model, lockstep: bool = False, pixels: Pixels | None = None
) -> PromptedClassifier | PromptedQA:
    """The model the adapter trains and scores a prompt with, for `cfg.kind`. `lockstep`:
    a partitioned backbone, whose ranks must run the same passes (fixed-length decoding).
    `pixels`: how image ids become pixels (kind: image)."""
    kind, prompt_cfg, cfg = cfg.kind, cfg.prompt, cfg.model
    if kind == "image":
        return PromptedClassifier(PromptedVisionEncoder(cfg, model, pixels, prompt_cfg.length, prompt_cfg.region))
    if kind == "qa":
        lm = PromptedCausalLM(
            tokenizer,
            model,
            max_context_tokens=cfg.max_context_tokens,
            max_answer_tokens=cfg.max_answer_tokens,
            instruction=cfg.instruction,
            lockstep=lockstep,
            compute_dtype=cfg.compute_dtype,
        )
        return PromptedQA(lm)
    return PromptedClassifier(PromptedEncoder(cfg, tokenizer, model))
