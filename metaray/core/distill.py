"""Model distillation (Hinton et al. 2015): a larger frozen teacher's soft labels for the
small served student.

In meta-training (`meta.distill` > 0) the teacher labels each task's support and query
inputs; the student's inner loop adds `meta.distill` x T² x the cross-entropy of its
logits on the queries (their labels unread) to the teacher's, and its query loss adds the
same term beside the queries' labels, so θ is meta-learned towards what the teacher
knows of each task (`Lesson.loss`).

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

from metaray.core.heads import SoftTargets, distillation_loss


@dataclass(frozen=True)
class DistillConfig:
    """The `distill` section: the teacher, and how its labels enter the student's head."""

    teacher: str = ""  # the teacher's backbone: a packaged name (all-mpnet-base-v2) or a folder; empty: off
    temperature: float = 1.0  # T: the teacher's logits / T before the softmax (bench/distill selects 1)
    weight: float = 1.0  # of the soft-label term beside the support's cross-entropy
    unlabeled: int = 0  # eval: unlabeled inputs per task (from the target's unused examples) the teacher labels
    image_size: int = 0  # an image teacher's input side (its own resolution); 0: the student's model.image_size

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature must be > 0, got {self.temperature}")
        if self.weight < 0:
            raise ValueError(f"distill.weight must be >= 0, got {self.weight}")
        if self.unlabeled < 0:
            raise ValueError(f"distill.unlabeled must be >= 0, got {self.unlabeled}")
        if self.image_size < 0:
            raise ValueError(f"distill.image_size must be >= 0, got {self.image_size}")

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)


@dataclass(frozen=True)
class Lesson:
    """What a teacher gives one task: its (M, C) logits on M inputs of the task."""

    config: DistillConfig
    teacher_logits: torch.Tensor

    def loss(self, student_logits: torch.Tensor, rows: slice, classes=None) -> torch.Tensor:
        """weight x T² x CE(softmax(teacher / T), softmax(student / T)) over the teacher's
        `rows` (those of the student's (M, C') logits), on the task's `classes` (C' of
        them; all by default): an inner mini-episode scores a subset of the classes, and
        the teacher's softmax is taken over the same subset."""
        targets = self._targets(rows, classes)
        if targets.shape != student_logits.shape:
            raise ValueError(f"student logits {tuple(student_logits.shape)} for teacher logits {tuple(targets.shape)}")
        return distillation_loss(student_logits, targets, self.config.temperature, self.config.weight)

    def soft_targets(self, embeddings: torch.Tensor) -> SoftTargets:
        """The soft-label term for the student's (M, D) embeddings of the same M inputs."""
        rows = self.teacher_logits.shape[0]
        if embeddings.shape[0] != rows:
            raise ValueError(f"{embeddings.shape[0]} student embeddings for {rows} rows of teacher logits")
        cfg = self.config
        return SoftTargets(embeddings.detach().float(), self._targets(), cfg.temperature, cfg.weight)

    def _targets(self, rows: slice = slice(None), classes=None) -> torch.Tensor:
        """softmax(teacher / T) of the teacher's `rows`, over its `classes` (all by default)."""
        teacher = self.teacher_logits[rows].float()
        if classes is not None:
            teacher = teacher[:, torch.as_tensor(classes)]
        return F.softmax(teacher / self.config.temperature, dim=-1)
