"""Model distillation (Hinton et al. 2015): a larger frozen teacher's soft labels for the
small served student.

Per task the teacher (a larger backbone with a linear probe fitted on the task's support
set) labels the support set and any unlabeled inputs of the task; the student's head is
fitted to the support's labels plus `weight` x T² x the cross-entropy to the teacher's
labels softened by the temperature T (`heads.SoftTargets`). The student keeps its own
backbone and prompt, so it answers at its own cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaray.core.heads import SoftTargets


@dataclass(frozen=True)
class DistillConfig:
    """The `distill` section: the teacher, and how its labels enter the student's head."""

    teacher: str = ""  # the teacher's backbone: a packaged name (all-mpnet-base-v2) or a folder; empty: off
    temperature: float = 2.0  # T: the teacher's logits / T before the softmax
    weight: float = 1.0  # of the soft-label term beside the support's cross-entropy
    unlabeled: int = 0  # eval: unlabeled inputs per task (from the target's unused examples) the teacher labels

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature must be > 0, got {self.temperature}")
        if self.weight < 0:
            raise ValueError(f"distill.weight must be >= 0, got {self.weight}")
        if self.unlabeled < 0:
            raise ValueError(f"distill.unlabeled must be >= 0, got {self.unlabeled}")

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)


@dataclass(frozen=True)
class Lesson:
    """What a teacher gives one task: its (M, C) logits on M inputs of the task."""

    config: DistillConfig
    teacher_logits: torch.Tensor

    def soft_targets(self, embeddings: torch.Tensor) -> SoftTargets:
        """The soft-label term for the student's (M, D) embeddings of the same M inputs."""
        rows = self.teacher_logits.shape[0]
        if embeddings.shape[0] != rows:
            raise ValueError(f"{embeddings.shape[0]} student embeddings for {rows} rows of teacher logits")
        cfg = self.config
        targets = F.softmax(self.teacher_logits.float() / cfg.temperature, dim=-1)
        return SoftTargets(embeddings.detach().float(), targets, cfg.temperature, cfg.weight)
