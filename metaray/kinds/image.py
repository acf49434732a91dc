"""kind: image — few-shot image classification with a frozen CNN or vision transformer.

The prompted model is `PromptedClassifier` over `PromptedVisionEncoder` (a visual prompt:
learnable pixels, `prompt.region`); scores and episodes as for text classification, with
warped support views (`inner.views`) and the fine-tuning baseline. Inputs are image ids,
turned into pixels by the data registry; served tasks carry base64 images (`image`).
"""

from __future__ import annotations

from metaray.config import ExperimentConfig, ModelConfig, PromptConfig
from metaray.kinds.base import CorpusTasks, KindRules
from metaray.models.classifier import HEADS, PromptedClassifier
from metaray.models.image_backbone import check_image_backbone, image_weights_gib, load_image_backbone
from metaray.models.vision import PromptedVisionEncoder


class ImageKind(CorpusTasks):
    name = "image"
    metrics = HEADS
    primary_metric = "proto"
    rules = KindRules(
        own_methods=("protonet", "linear_probe", "finetune", "teacher"),
        text_inits=False,
        views=True,
        sharded=False,
        pixels=True,
        heads=True,
        distill=True,
    )
    hugging_face = False  # EfficientNet-Lite and wrapped vision models: each actor loads its own
    input_field, checkpoint_setting, budget_setting = "image", "image_checkpoint", "image_adapt"
    distill_setting, teacher_example = "image_distill", "efficientnet-lite2"  # serving's teacher of image tasks

    def check_backbone(self, cfg: ModelConfig, prompt: PromptConfig | None = None) -> None:
        """Fail fast (no weights read) where the backbone cannot load, or has no stages for
        the deep prompt `prompt.depth` asks for."""
        check_image_backbone(cfg, prompt.depth if prompt else 1)

    def load_backbone(self, cfg: ModelConfig):
        return load_image_backbone(cfg)

    def weights_gib(self, model: ModelConfig) -> float:
        return image_weights_gib(model)

    def prompted_model(self, cfg: ExperimentConfig, tokenizer, model, lockstep=False, pixels=None):
        p = cfg.prompt
        return PromptedClassifier(PromptedVisionEncoder(cfg.model, model, pixels, p.length, p.region, p.depth))


IMAGE = ImageKind()
