"""Few-shot tasks online: adapt φ from the meta-learned θ on a handful of examples with
the same `core.adapt` and support loss as meta-training, then classify with a linear head
fitted on the examples under φ, or the task's prototypes (`TaskClassifier`), or answer
questions with greedy decoding (`TaskAnswerer`).
No Ray here: the Serve deployments wrap this.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metaray.checkpoint import CheckpointError, load_checkpoint, read_settings
from metaray.config import ExperimentConfig, experiment_from_dict
from metaray.core import InnerConfig, LinearHead, adapt, cosine_logits, fit_linear_probe, prototypes
from metaray.core.adapt import AdaptResult
from metaray.core.distill import DistillConfig, Lesson
from metaray.core.heads import SoftTargets
from metaray.data import Episode, QAEpisode, QAItem
from metaray.kinds import CLASSIFY, IMAGE, QA, kind_named, kind_of
from metaray.models import ContextTooLong, PromptedClassifier, PromptedQA
from metaray.serving.images import decode_image
from metaray.serving.store import CorruptTask, TaskVersion

MAX_BYTES = 1 << 40  # images were checked against the limit at the ingress


@dataclass(frozen=True)
class ClassifyRequest:
    """One request's share of a batch: a task's tensors and labels, and its texts."""

    key: str  # task id @ version: requests with equal keys share one forward pass
    tensors: dict[str, torch.Tensor]  # prompt (P, D), prototypes (C, D), and a linear head's weight (C, D), bias (C,)
    labels: tuple[str, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class AnswerRequest:
    """One /answer request's share of a batch: a task's prompt and its questions."""

    key: str  # task id @ version: requests with equal keys share one generation pass
    prompt: torch.Tensor  # φ, (P, D)
    questions: tuple[tuple[str, str], ...]  # (context, question)


def prompt_reading(cfg: ExperimentConfig) -> dict:
    """How a served model reads a task's prompt: what a stored task records (its metrics'
    `read_with`) and a later server checks, beyond the prompt's shape."""
    return {"backbone": cfg.model.backbone, "length": cfg.prompt.length} | read_settings(dataclasses.asdict(cfg.prompt))


def check_prompt_shape(task: TaskVersion, theta: torch.Tensor, reading: dict | None = None) -> None:
    """Refuse (CorruptTask, naming both shapes) a stored task whose prompt was adapted from a
    θ of another shape: a checkpoint of another prompt length, depth or backbone served
    since, whose model would misread it; and (with the served `reading`) one adapted for a
    model that reads a prompt of the same shape otherwise (a pool of 2 x 8 rows against a
    prompt of 16)."""
    saved = task.meta.get("metrics", {}).get("read_with")
    if reading is not None and saved is not None and saved != reading:
        raise CorruptTask(
            f"task {task.task_id!r} version {task.version}: it was adapted for a model that reads its prompt with "
            f"{saved}, and the served checkpoint's reads it with {reading}; create the task again, or serve the "
            "checkpoint it was adapted from"
        )
    shape, served = tuple(task.tensors["prompt"].shape), tuple(theta.shape)
    if shape != served:
        raise CorruptTask(
            f"task {task.task_id!r} version {task.version}: its prompt has shape {shape}, and the served checkpoint's "
            f"has {served} (another prompt length, prompt.depth, prompt.pool_size or backbone); create the task again, "
            "or serve the checkpoint it was adapted from"
        )


def served_model(
    checkpoint: str, kind: str, pixels=None
) -> tuple[torch.Tensor, ExperimentConfig, PromptedClassifier | PromptedQA]:
    """(θ, the run's config, the prompted model) of a meta-training checkpoint's latest
    round; a checkpoint of another task kind is refused by name. `pixels`: how an image
    model turns its inputs (base64 images, for serving) into pixels."""
    state, meta = load_checkpoint(checkpoint, "latest")
    cfg = experiment_from_dict(meta["config"])
    if cfg.kind != kind:
        raise CheckpointError(f"{checkpoint} is a {cfg.kind} checkpoint; a {kind} model needs a {kind} run")
    task_kind = kind_of(cfg)
    return (
        state["meta_prompt"],
        cfg,
        task_kind.prompted_model(cfg, *task_kind.load_backbone(cfg.model), pixels=pixels),
    )


def _metrics(inner: InnerConfig, result: AdaptResult, start: float) -> dict:
    return {
        "steps": inner.steps,
        "support_loss_first": result.losses[0] if result.losses else None,
        "support_loss_last": result.losses[-1] if result.losses else None,
        "adapt_seconds": time.perf_counter() - start,
    }


SERVED_HEADS = ("probe", "proto")


def examples_episode(inputs: list, labels: list[str]) -> Episode:
    """A served task's examples as an episode without queries, its classes the sorted labels."""
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels], dtype=np.int64)
    return Episode(tuple(inputs), y, (), np.zeros(0, dtype=np.int64), tuple(names))


class TaskClassifier:
    """The frozen encoder (loaded once) and θ from a meta-training checkpoint; of texts,
    or (kind "image") of base64 images, which it decodes itself. `head`: what a task
    answers with, a linear head fitted on its examples (`probe`: logistic regression on
    the prompted embeddings, what wins at meta-test) or their prototypes (`proto`)."""

    def __init__(
        self,
        checkpoint: str,
        inner: InnerConfig,
        threads: int = 1,
        kind: str = CLASSIFY.name,
        head: str = "probe",
        distill: DistillConfig | None = None,
    ) -> None:
        torch.set_num_threads(threads)
        if head not in SERVED_HEADS:
            raise ValueError(f"head must be one of {SERVED_HEADS}, got {head!r}")
        # an adaptation reads its support images at every inner step: decode each once
        decoded = functools.lru_cache(maxsize=1024)(lambda data: decode_image(data, MAX_BYTES))
        images = kind_named(kind) is IMAGE
        pixels = (lambda data: np.stack([decoded(i) for i in data])) if images else None
        self.meta_prompt, cfg, self.classifier = served_model(checkpoint, kind, pixels)
        self.reading = prompt_reading(cfg)
        self.inner, self.head, self.distill = inner, head, distill
        teaches = distill is not None and distill.enabled  # the teacher is loaded as evaluation loads it
        self.teacher = kind_of(cfg).teacher(dataclasses.replace(cfg, distill=distill), pixels) if teaches else None

    def adapt(
        self, texts: list[str], labels: list[str], steps: int | None = None, unlabeled: Sequence[str] = ()
    ) -> tuple[dict, dict]:
        """(tensors, metrics): φ after `steps` (default: the configured budget) inner steps
        from θ on the examples, the class prototypes under φ and (head `probe`) the linear
        head fitted on the examples' embeddings under φ, as `metaray eval`'s probe head;
        with `unlabeled` inputs, fitted to the teacher's soft labels of them and of the
        examples too, as its `distilled` head."""
        episode = examples_episode(texts, labels)
        names = episode.label_names
        inner = self.inner if steps is None else dataclasses.replace(self.inner, steps=steps)
        start = time.perf_counter()
        result = adapt({"prompt": self.meta_prompt}, self.classifier.support_loss_fn(episode, inner, seed=0), inner)
        phi = result.adapted_prompt
        support, fit_labels = self.classifier.fit_set(phi, episode, inner, seed=0)
        tensors = {"prompt": phi, "prototypes": prototypes(support, fit_labels, len(names))}
        metrics = {}
        if self.head == "probe":
            soft = self._soft_targets(dataclasses.replace(episode, unlabeled_inputs=tuple(unlabeled)), phi, support)
            fitted = fit_linear_probe(support, fit_labels, len(names), self.classifier.scale, soft=soft)
            tensors |= {"head_weight": fitted.weight, "head_bias": fitted.bias}
            metrics = {"distilled": {"teacher": self.teacher.cfg.backbone, "unlabeled": len(unlabeled)}} if soft else {}
        return tensors, _metrics(inner, result, start) | metrics | {"read_with": self.reading}

    def _soft_targets(self, episode: Episode, phi: torch.Tensor, support: torch.Tensor) -> SoftTargets | None:
        """The teacher's soft labels of the examples and the unlabeled inputs, for the
        student's embeddings of them under φ; None for a task without unlabeled inputs."""
        if not episode.unlabeled_inputs:
            return None
        if self.teacher is None:
            raise ValueError(
                "unlabeled inputs need a distillation teacher of the task's kind: serve with distill.teacher "
                "(texts) or image_distill.teacher (images) set"
            )
        lesson = Lesson(self.distill, self.teacher.label(episode).logits)
        return self.classifier.soft_targets(phi, episode, support, lesson)

    def classify(self, requests: list[ClassifyRequest]) -> list[list[dict]]:
        """Per request, per text: the label and the score of every label (softmax over the
        task's head: its linear head, or scaled cosine similarity to its prototypes for a
        task stored without one). One forward pass per task."""
        out: list[list[dict] | None] = [None] * len(requests)
        for key in dict.fromkeys(r.key for r in requests):
            members = [i for i, r in enumerate(requests) if r.key == key]
            first = requests[members[0]]
            texts = [t for i in members for t in requests[i].texts]
            emb = self.classifier.encoder.encode(texts, first.tensors["prompt"])
            probs = task_logits(first.tensors, emb, self.classifier.scale).softmax(-1)
            rows = [_row(first.labels, p) for p in probs.tolist()]
            for i in members:
                out[i], rows = rows[: len(requests[i].texts)], rows[len(requests[i].texts) :]
        return out


def task_logits(tensors: dict[str, torch.Tensor], embeddings: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, C) logits of a stored task's head for (N, D) embeddings under its prompt."""
    if "head_weight" in tensors:
        return LinearHead(tensors["head_weight"], tensors["head_bias"], scale).logits(embeddings)
    return cosine_logits(embeddings, tensors["prototypes"], scale)


def _row(labels: tuple[str, ...], probs: list[float]) -> dict:
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": labels[best], "score": probs[best], "scores": dict(zip(labels, probs, strict=True))}


class TaskAnswerer:
    """The frozen causal LM (loaded once) and θ from a question-answering checkpoint.
    `long_context`: a question whose context is over the model's window is refused
    ("refuse") or read up to the window ("head"); examples are always cut around their answer."""

    def __init__(self, checkpoint: str, inner: InnerConfig, long_context: str = "refuse", threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.meta_prompt, cfg, self.qa = served_model(checkpoint, QA.name)
        self.reading = prompt_reading(cfg)
        self.inner, self.long_context = inner, long_context

    def adapt(self, examples: list[dict], steps: int | None = None) -> tuple[dict, dict]:
        """(tensors, metrics): φ after `steps` (default: the configured budget) inner steps
        from θ on the examples ({context, question, answer}, the answer in the context)."""
        items = tuple(_item(e["context"], e["question"], e["answer"]) for e in examples)
        inner = self.inner if steps is None else dataclasses.replace(self.inner, steps=steps)
        start = time.perf_counter()
        loss_fn = self.qa.support_loss_fn(QAEpisode("", items, ()), inner, seed=0)
        result = adapt({"prompt": self.meta_prompt}, loss_fn, inner)
        return {"prompt": result.adapted_prompt}, _metrics(inner, result, start) | {"read_with": self.reading}

    def answer(self, requests: list[AnswerRequest]) -> list[list[str] | ContextTooLong]:
        """Per request, its answers, or the `ContextTooLong` that refuses it; one batched
        generation per task."""
        out: list = [None] * len(requests)
        for key in dict.fromkeys(r.key for r in requests):
            members = []
            for i, r in enumerate(requests):
                if r.key == key:
                    try:
                        for context, question in r.questions:
                            self.qa.lm.fit_context(_item(context, question), self.long_context)
                        members.append(i)
                    except ContextTooLong as err:
                        out[i] = err
            items = [_item(c, q) for i in members for c, q in requests[i].questions]
            answers = self.qa.lm.generate(requests[members[0]].prompt, items, self.long_context) if items else []
            for i in members:
                n = len(requests[i].questions)
                out[i], answers = answers[:n], answers[n:]
        return out


def _item(context: str, question: str, answer: str = "") -> QAItem:
    start = context.find(answer) if answer else 0
    return QAItem("", context, question, (answer,), max(start, 0))
