"""Frozen backbones and the prompted models each task kind needs."""

from metaray.models.classifier import HEADS, PromptedClassifier
from metaray.models.encoder import ModelLoadError, PromptedEncoder, check_backbone, load_backbone, resolve_backbone

__all__ = [
    "HEADS",
    "ModelLoadError",
    "PromptedClassifier",
    "PromptedEncoder",
    "check_backbone",
    "load_backbone",
    "resolve_backbone",
]
