"""Few-shot tasks online: adapt φ from the meta-learned θ on a handful of labelled
examples with the same `core.adapt` and support loss as meta-training, then classify
with the task's prototypes. No Ray here: the Serve deployments wrap this.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import ExperimentConfig, ModelConfig, build
from metaray.core import InnerConfig, adapt, cosine_logits, prototypes
from metaray.data import Episode
from metaray.models import PromptedClassifier, PromptedEncoder, load_backbone


@dataclass(frozen=True)
class ClassifyRequest:
    """One request's share of a batch: a task's tensors and labels, and its texts."""

    key: str  # task id @ version: requests with equal keys share one forward pass
    tensors: dict[str, torch.Tensor]  # prompt (P, D), prototypes (C, D)
    labels: tuple[str, ...]
    texts: tuple[str, ...]


def served_encoder(checkpoint: str) -> tuple[torch.Tensor, ModelConfig, PromptedEncoder]:
    """(θ, the model config, the frozen encoder) of a meta-training checkpoint's latest round."""
    state, meta = load_checkpoint(checkpoint, "latest")
    model_cfg = build(ExperimentConfig, meta["config"]).model
    return state["meta_prompt"], model_cfg, PromptedEncoder(model_cfg, *load_backbone(model_cfg))


class TaskClassifier:
    """The frozen encoder (loaded once) and θ from a meta-training checkpoint."""

    def __init__(self, checkpoint: str, inner: InnerConfig, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.meta_prompt, _, encoder = served_encoder(checkpoint)
        self.inner = inner
        self.classifier = PromptedClassifier(encoder)

    def adapt(self, texts: list[str], labels: list[str], steps: int | None = None) -> tuple[dict, dict]:
        """(tensors, metrics): φ after `steps` (default: the configured budget) inner steps
        from θ on the examples, and the class prototypes under φ."""
        names = sorted(set(labels))
        y = np.array([names.index(label) for label in labels], dtype=np.int64)
        episode = Episode(tuple(texts), y, (), np.zeros(0, dtype=np.int64), tuple(names))
        inner = self.inner if steps is None else dataclasses.replace(self.inner, steps=steps)
        start = time.perf_counter()
        result = adapt({"prompt": self.meta_prompt}, self.classifier.support_loss_fn(episode, inner, seed=0), inner)
        phi = result.adapted_prompt
        protos = prototypes(self.classifier.encoder.encode(list(texts), phi), torch.from_numpy(y), len(names))
        metrics = {
            "steps": inner.steps,
            "support_loss_first": result.losses[0] if result.losses else None,
            "support_loss_last": result.losses[-1] if result.losses else None,
            "adapt_seconds": time.perf_counter() - start,
        }
        return {"prompt": phi, "prototypes": protos}, metrics

    def classify(self, requests: list[ClassifyRequest]) -> list[list[dict]]:
        """Per request, per text: the label and the score of every label (softmax over
        scaled cosine similarity to the prototypes). One forward pass per task."""
        out: list[list[dict] | None] = [None] * len(requests)
        for key in dict.fromkeys(r.key for r in requests):
            members = [i for i, r in enumerate(requests) if r.key == key]
            first = requests[members[0]]
            texts = [t for i in members for t in requests[i].texts]
            emb = self.classifier.encoder.encode(texts, first.tensors["prompt"])
            probs = cosine_logits(emb, first.tensors["prototypes"], self.classifier.scale).softmax(-1)
            rows = [_row(first.labels, p) for p in probs.tolist()]
            for i in members:
                out[i], rows = rows[: len(requests[i].texts)], rows[len(requests[i].texts) :]
        return out


def _row(labels: tuple[str, ...], probs: list[float]) -> dict:
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": labels[best], "score": probs[best], "scores": dict(zip(labels, probs, strict=True))}
