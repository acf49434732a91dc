"""The distillation teacher: a larger frozen encoder and a linear probe fitted on each
task's support set (`core.distill`).

A sentence encoder for texts (kind: classify), an image backbone for images (kind: image,
built by the kind: `CorpusTasks.teacher`); its label space is the task's, fitted per
task, so any encoder that gives embeddings of the task's inputs can teach any student.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch

from metaray.config import ConfigError, ExperimentConfig, ModelConfig
from metaray.core import fit_linear_probe
from metaray.data import Episode
from metaray.models.backbone import check_backbone, load_backbone, weights_gib
from metaray.models.encoder import PromptedEncoder


def teacher_model_config(student: ModelConfig, teacher: str, image_size: int = 0) -> ModelConfig:
    """The student's model settings (text length, logit scale) with the teacher's backbone
    and, for an image teacher, its own input side `image_size` (0: the student's)."""
    return dataclasses.replace(student, backbone=teacher, gguf_file="", image_size=image_size or student.image_size)


def check_teacher(cfg: ExperimentConfig, check=check_backbone, weights=weights_gib) -> None:
    """Refuse, before any work, a teacher that cannot load (`check`: the kind's backbone
    check), or whose weights and the student's (`weights`: GiB of a model config) exceed
    the memory the config gives each actor (the kind's rules have already refused a
    teacher for a kind that has none)."""
    if not cfg.distill.enabled:
        return
    teacher = teacher_model_config(cfg.model, cfg.distill.teacher, cfg.distill.image_size)
    try:
        check(teacher)
    except Exception as err:  # the loader's error says how to make it loadable
        raise ConfigError(f"distill.teacher={cfg.distill.teacher!r} cannot be loaded: {err}") from err
    budget = cfg.ray.memory_per_actor_gb
    need = {name: weights(model) for name, model in (("teacher", teacher), ("student", cfg.model))}
    if budget and sum(need.values()) > budget:
        raise ConfigError(
            f"distill.teacher={cfg.distill.teacher!r}: each actor holds the teacher's weights ({need['teacher']:.2f} "
            f"GiB) beside the student's ({need['student']:.2f} GiB), over ray.memory_per_actor_gb={budget}; raise it "
            "or choose a smaller teacher"
        )


def cache_key(item):
    """An input's key in the teacher's cache: itself, or a digest of a long one (a served
    image's base64 is kilobytes; 50,000 of them would hold the images twice)."""
    if not isinstance(item, str) or len(item) <= 256:
        return item
    return "#" + hashlib.blake2b(item.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class TeacherOutput:
    """One task's teacher: its query accuracy (%; NaN without queries, as a served task)
    and its (N + U, C) logits on the support's and the unlabeled inputs, in that order."""

    accuracy: float
    logits: torch.Tensor


class Teacher:
    """A frozen encoder + linear probe per task, labelling the task's inputs for a student.

    The teacher has no prompt, so a text's embedding never changes: the last `cache_size`
    texts' embeddings are kept (a served task's refresh, or test tasks drawn from one
    corpus, re-read the same texts, and the teacher is the costly model)."""

    def __init__(self, cfg: ModelConfig, cache_size: int = 50_000, encoder=None) -> None:
        """`encoder`: the teacher's (`PromptedEncoder` or `PromptedVisionEncoder`, read
        without a prompt); by default `cfg`'s sentence encoder."""
        self.cfg = cfg
        self.encoder = encoder if encoder is not None else PromptedEncoder(cfg, *load_backbone(cfg))
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    def embed(self, texts) -> torch.Tensor:
        """(N, D) embeddings of texts (or image ids, or a served task's base64 images),
        encoding only those not in the cache."""
        keys = [cache_key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in self.cache}.items())
        for (key, _), row in zip(missing, self.encoder.encode([t for _, t in missing], None), strict=True):
            self.cache[key] = row
        out = torch.stack([self.cache[k] for k in keys]) if len(keys) else torch.zeros(0, self.encoder.hidden_size)
        for key in keys:
            self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return out

    def label(self, episode: Episode) -> TeacherOutput:
        """Fit the probe on the support set; its logits on support and unlabeled inputs."""
        labels = torch.from_numpy(episode.support_labels)
        support = self.embed(episode.support_inputs)
        head = fit_linear_probe(support, labels, episode.n_classes, self.cfg.scale)
        query = self.embed(episode.query_inputs)
        correct = (head.logits(query).argmax(-1) == torch.from_numpy(episode.query_labels)).float()
        accuracy = float(correct.mean() * 100) if len(correct) else float("nan")
        unlabeled = self.embed(episode.unlabeled_inputs)
        return TeacherOutput(accuracy, head.logits(torch.cat([support, unlabeled])))
