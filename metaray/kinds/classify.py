"""kind: classify — intent (or any text) classification with a frozen encoder.

The prompted model is `PromptedClassifier` over `PromptedEncoder`; its scores are query
accuracy per head (prototypes `proto`, linear probe `probe`), meta-validation selects on
prototypes. Tasks are N-way K-shot episodes of a text corpus, or every class of it (the
full-label protocol). Served tasks carry texts (`text` fields).
"""

from __future__ import annotations

from metaray.config import ExperimentConfig, ModelConfig, PromptConfig
from metaray.kinds.base import CorpusTasks, KindRules
from metaray.models.backbone import check_backbone, load_backbone
from metaray.models.classifier import HEADS, PromptedClassifier
from metaray.models.deep import check_text_depth
from metaray.models.encoder import PromptedEncoder


class ClassifyKind(CorpusTasks):
    name = "classify"
    metrics = HEADS
    primary_metric = "proto"
    rules = KindRules(
        own_methods=("protonet", "linear_probe", "teacher"),
        full_protocol=True,
        heads=True,
        edits=True,
        synonyms=True,
        distill=True,
        pool=True,
    )
    hugging_face = True  # its backbone can be shared through the object store
    # serving: the field examples and requests carry, the settings of its model and budget
    input_field, checkpoint_setting, budget_setting = "text", "checkpoint", "adapt"
    distill_setting, teacher_example = "distill", "all-mpnet-base-v2"  # serving's teacher of this kind's tasks

    def check_backbone(self, cfg: ModelConfig, prompt: PromptConfig | None = None) -> None:
        check_backbone(cfg)
        check_text_depth(cfg, prompt.depth if prompt else 1)

    def load_backbone(self, cfg: ModelConfig):
        return load_backbone(cfg)

    def prompted_model(self, cfg: ExperimentConfig, tokenizer, model, lockstep=False, pixels=None):
        p = cfg.prompt
        return PromptedClassifier(
            PromptedEncoder(cfg.model, tokenizer, model, p.depth, p.pool_size, p.pool_temperature)
        )


CLASSIFY = ClassifyKind()
