"""Frozen backbones and the prompted models each task kind needs."""

from metaray.models.backbone import (
    ModelLoadError,
    SharedBackbone,
    check_backbone,
    export_backbone,
    import_backbone,
    load_backbone,
    load_causal_lm,
    resolve_backbone,
)
from metaray.models.causal_lm import ContextTooLong, PromptedCausalLM, native_bf16
from metaray.models.classifier import HEADS, PromptedClassifier
from metaray.models.encoder import PromptedEncoder
from metaray.models.qa import QA_METRICS, PromptedQA

__all__ = [
    "HEADS",
    "QA_METRICS",
    "PromptedQA",
    "ContextTooLong",
    "PromptedCausalLM",
    "native_bf16",
    "ModelLoadError",
    "PromptedClassifier",
    "PromptedEncoder",
    "SharedBackbone",
    "check_backbone",
    "export_backbone",
    "import_backbone",
    "load_backbone",
    "load_causal_lm",
    "resolve_backbone",
]
