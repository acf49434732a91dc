"""Prompted question answering: the losses and scores meta-learning needs of a causal LM.

The same four methods as `PromptedClassifier` (`init_prompt`, `support_loss_fn`,
`query_loss`, `score`) over a `QAEpisode`, so the adapter, the driver, evaluation and
Tune run question answering through the interfaces they use for classification.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from metaray.config import PromptConfig
from metaray.core import InnerConfig
from metaray.core.adapt import LossFn
from metaray.core.answers import squad_scores
from metaray.core.augment import TextEdits, edited_copies
from metaray.core.prompt import initial_prompt
from metaray.data.squad import QAEpisode, QAItem
from metaray.models.causal_lm import PromptedCausalLM

QA_METRICS = ("em", "f1")


def question_copies(items: list[QAItem], views: int, edits: TextEdits, rng) -> list[QAItem]:
    """`views` copies of every item whose question has `edits` (copy v of item i at
    v·len(items) + i); the context, the answers and `answer_start` are the item's own, so
    the answer span stays valid."""
    questions = edited_copies([item.question for item in items], views, edits, rng)
    return [replace(item, question=q) for q, item in zip(questions, items * views, strict=True)]


class PromptedQA:
    """Answer-token cross-entropy for training; SQuAD exact match and F1 (%) of greedy
    answers for scoring. Without a prompt, the model reads the hand-written instruction
    (`model.instruction`): the discrete-prompt baseline."""

    def __init__(self, lm: PromptedCausalLM) -> None:
        self.lm = lm

    def init_prompt(self, cfg: PromptConfig) -> torch.Tensor:
        """θ₀, shape (depth·P, D), per `prompt.init` ("text": the embeddings of `prompt.text`);
        a deep prompt's deeper rows the states the input prompt has at their layers, so a
        deep θ₀ answers as the shallow one does."""
        table = self.lm.embedding.weight.detach().float().cpu()
        theta = initial_prompt(cfg.init, cfg.length, table, self.lm.token_ids(cfg.text), cfg.seed)
        return torch.cat([theta, *self.lm.prompt_states(theta)]) if self.lm.depth > 1 else theta

    def support_loss_fn(self, episode: QAEpisode, inner: InnerConfig, seed: int) -> LossFn:
        """Answer cross-entropy on at most `inner.batch_shots` support questions (0: all),
        drawn afresh at each step from (seed, step), and on `inner.views` copies of each
        whose question has the text edits of `inner.augment` (`question_copies`)."""
        support = episode.support

        def loss(params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
            rng = np.random.default_rng([seed, step])
            rows = np.arange(len(support))
            if inner.batch_shots and len(support) > inner.batch_shots:
                rows = np.sort(rng.choice(rows, inner.batch_shots, replace=False))
            items = [support[i] for i in rows]
            if inner.views:
                items += question_copies(items, inner.views, inner.augment, rng)
            return self.lm.loss(params["prompt"], items)

        return loss

    def query_loss(self, prompt: torch.Tensor, episode: QAEpisode, objective=None) -> torch.Tensor:
        """Answer cross-entropy on the query questions under `prompt` (one forward pass).
        `objective` is the classifier kinds' (a head to score by); the kind's rules refuse
        an algorithm or consistency term that would need one here."""
        return self.lm.loss(prompt, list(episode.query))

    def score(
        self, prompt: torch.Tensor | None, episode: QAEpisode, heads=QA_METRICS, inner=None, seed: int = 0, lesson=None
    ) -> tuple[dict[str, float], float]:
        """EM and F1 (%) of the greedy answers to the query questions, and 0 seconds of
        support-side work (a QA task needs nothing beyond its inner loop, and fits no head
        on augmented copies or a teacher's labels: `inner`, `seed` and `lesson` are unused)."""
        answers = self.lm.generate(prompt, list(episode.query))
        scores = squad_scores(answers, [q.answers for q in episode.query])
        named = {"em": scores["exact_match"], "f1": scores["f1"]}
        return {head: named[head] for head in heads}, 0.0
