"""The prompted intent classifier: frozen encoder + soft prompt + per-task head.

Losses and scores for one `Episode`; everything the inner loop, the outer
pseudo-gradients and evaluation need from the model lives here.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from metaray.config import PromptConfig
from metaray.core import InnerConfig, QueryObjective, cosine_logits, fit_linear_probe, prototypes
from metaray.core.adapt import LossFn
from metaray.core.distill import Lesson
from metaray.core.heads import leave_one_out_loss, ridge_head, ridge_leave_one_out_loss
from metaray.data import Episode
from metaray.models.encoder import PromptedEncoder

HEADS = ("proto", "probe")
DISTILLED = "distilled"  # the probe fitted to a teacher's soft labels too (`core.distill`)
FIT_STREAM = 1 << 30  # the generator stream of the copies a head is fitted on (inner steps use 0, 1, ...)
PROTOTYPES = QueryObjective()  # the query loss against the support's prototypes


class PromptedClassifier:
    """Prototype (or linear-probe) classification of prompted embeddings: of sentences
    (`PromptedEncoder`) or of images (`PromptedVisionEncoder`)."""

    def __init__(self, encoder: PromptedEncoder) -> None:
        self.encoder = encoder
        self.scale = encoder.cfg.scale

    def init_prompt(self, cfg: PromptConfig) -> torch.Tensor:
        """θ₀, shape (P, D), per `prompt.init`."""
        return self.encoder.init_prompt(cfg)

    def fitted_logits(self, head: str, fitted_on: tuple, query: torch.Tensor, ridge_lambda: float) -> torch.Tensor:
        """(Q, C) logits of (Q, D) `query` embeddings under a head fitted on `fitted_on` =
        (support (N, D), labels (N,), classes): cosine similarity to the prototypes
        (`proto`) or the ridge head (`ridge`), both differentiable in every embedding."""
        support, labels, n_classes = fitted_on
        if head == "ridge":
            return self.scale * query @ ridge_head(support, labels, n_classes, ridge_lambda)
        return cosine_logits(query, prototypes(support, labels, n_classes), self.scale)

    def support_loss_fn(self, episode: Episode, inner: InnerConfig, seed: int, lesson: Lesson | None = None) -> LossFn:
        """Loss on an inner mini-episode of at most `inner.batch_ways` classes x
        `inner.batch_shots` examples of the support set, drawn afresh at each step from
        (seed, step): leave-one-out, or (images, `inner.views` > 0) `inner.views` warped
        copies of each example scored against the originals, a loss that still teaches
        something at one shot, where there is nothing to leave out. Scored against the
        prototypes (`inner.loss=proto`) or a ridge head (`ridge`, the r2d2 objective's head).
        With a `lesson` (its teacher's logits on the support, then on the episode's
        unlabeled inputs): plus its distillation term on the unlabeled inputs, scored by
        the same head, on the mini-episode's classes."""
        labels = episode.support_labels
        n = episode.n_classes
        taught = slice(len(episode.support_inputs), None)

        def loss(params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
            rng = np.random.default_rng([seed, step])
            classes = np.arange(n)
            if n > inner.batch_ways:
                classes = np.sort(rng.choice(n, inner.batch_ways, replace=False))
            relabel = -np.ones(n, dtype=np.int64)
            relabel[classes] = np.arange(len(classes))
            rows = np.flatnonzero(relabel[labels] >= 0)
            if inner.batch_shots:
                rows = np.concatenate([_at_most(rng, rows[labels[rows] == c], inner.batch_shots) for c in classes])
            texts, y = [episode.support_inputs[i] for i in rows], torch.from_numpy(relabel[labels[rows]])
            c, lam = len(classes), inner.ridge_lambda
            if not inner.views:
                emb = self.encoder.embed(texts, params["prompt"])
                if inner.loss == "ridge":
                    own = ridge_leave_one_out_loss(emb, y, c, lam, self.scale)
                else:
                    own = leave_one_out_loss(emb, y, c, self.scale)
            else:
                emb = self.encoder.embed_views(texts, params["prompt"], inner.views, rng, inner.augment)
                logits = self.fitted_logits(inner.loss, (emb[: len(rows)], y, c), emb[len(rows) :], lam)
                own = F.cross_entropy(logits, y.repeat(inner.views))
            if lesson is None or not episode.unlabeled_inputs:
                return own
            unlabeled = self.encoder.embed(episode.unlabeled_inputs, params["prompt"])
            logits = self.fitted_logits(inner.loss, (emb[: len(rows)], y, c), unlabeled, lam)
            return own + lesson.loss(logits, taught, classes)

        return loss

    def query_loss(
        self, prompt: torch.Tensor, episode: Episode, objective: QueryObjective = PROTOTYPES, lesson=None
    ) -> torch.Tensor:
        """Cross-entropy of the query set, both sets under `prompt`, against the support's
        prototypes or through a ridge head fitted on the support (`objective.head`), plus
        `objective.consistency` x the mean squared distance to the unprompted embeddings,
        plus a `lesson`'s distillation term on the queries (its teacher's logits on the
        support, then on the queries).
        One forward pass over support and query together: a partitioned (ZeRO-3) backbone
        frees its gathered layers only when each backward pass covers one forward pass."""
        n_support = len(episode.support_inputs)
        inputs = episode.support_inputs + episode.query_inputs
        both = self.encoder.embed(inputs, prompt)
        support, query = both[:n_support], both[n_support:]
        fitted_on = (support, torch.from_numpy(episode.support_labels), episode.n_classes)
        logits = self.fitted_logits(objective.head, fitted_on, query, objective.ridge_lambda)
        loss = F.cross_entropy(logits, torch.from_numpy(episode.query_labels))
        if lesson is not None:
            loss = loss + lesson.loss(logits, slice(n_support, None))
        if objective.consistency:
            plain = self.encoder.encode(inputs, None)
            loss = loss + objective.consistency * (both - plain).pow(2).sum(-1).mean()
        return loss

    def fit_set(self, prompt, episode: Episode, inner: InnerConfig | None, seed: int) -> tuple[torch.Tensor, ...]:
        """(embeddings, labels) a head is fitted on: the support set under `prompt` and,
        where `inner` has text edits, `inner.views` edited copies of each example beside
        it, drawn from (seed, FIT_STREAM): augmentation before the head, as the inner
        loop's support loss has it."""
        texts, labels = list(episode.support_inputs), torch.from_numpy(episode.support_labels)
        if inner is not None and inner.views and inner.augment.enabled:
            rng = np.random.default_rng([seed, FIT_STREAM])
            texts += self.encoder.copies(texts, inner.views, inner.augment, rng)
            labels = labels.repeat(1 + inner.views)
        return self.encoder.encode(texts, prompt), labels

    def soft_targets(self, prompt, episode: Episode, support: torch.Tensor, lesson: Lesson):
        """The `lesson`'s soft-label term for the support's embeddings (the first rows of
        `support`, the fit set) and the unlabeled inputs' under `prompt`: the distilled
        head's, in evaluation and in serving alike."""
        unlabeled = self.encoder.encode(episode.unlabeled_inputs, prompt)
        return lesson.soft_targets(torch.cat([support[: len(episode.support_inputs)], unlabeled]))

    def score(
        self,
        prompt: torch.Tensor | None,
        episode: Episode,
        heads=HEADS,
        inner: InnerConfig | None = None,
        seed=0,
        lesson: Lesson | None = None,
    ) -> tuple[dict[str, float], float]:
        """Query accuracy (%) of each head, with support and query encoded under `prompt`
        (the heads fitted on `fit_set`; `distilled` also on the `lesson`'s teacher labels of
        the support and unlabeled inputs), and the seconds spent on the support side
        (encoding + heads): what a new task costs beyond its inner loop."""
        start = time.perf_counter()
        support, s_labels = self.fit_set(prompt, episode, inner, seed)
        fitted, n = {}, episode.n_classes
        if "proto" in heads:
            protos = prototypes(support, s_labels, n)
            fitted["proto"] = lambda x: cosine_logits(x, protos, self.scale)
        if "probe" in heads:
            fitted["probe"] = fit_linear_probe(support, s_labels, n, self.scale).logits
        if DISTILLED in heads:
            soft = self.soft_targets(prompt, episode, support, lesson)
            fitted[DISTILLED] = fit_linear_probe(support, s_labels, n, self.scale, soft=soft).logits
        support_seconds = time.perf_counter() - start
        query = self.encoder.encode(episode.query_inputs, prompt)
        q_labels = torch.from_numpy(episode.query_labels)
        return {head: _accuracy(logits_fn(query), q_labels) for head, logits_fn in fitted.items()}, support_seconds


def _at_most(rng: np.random.Generator, rows: np.ndarray, k: int) -> np.ndarray:
    return np.sort(rng.choice(rows, k, replace=False)) if len(rows) > k else rows


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean() * 100)
