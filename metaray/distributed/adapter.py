"""The task adapter: adapts θ on one task at a time (runs inside a Ray actor).

It loads the frozen backbone and the data sets once, when it starts; per task it
receives θ (through the object store) and a `TaskSpec` (a few integers), rebuilds
the episode from its own copy of the data, and returns the pseudo-gradient.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field

import torch

from metaray.config import ExperimentConfig, PromptConfig
from metaray.core import InnerConfig, adapt, query_gradient, reptile_pseudo_gradient
from metaray.data import (
    Episode,
    QAEpisode,
    SourceConfig,
    TaskSpec,
    load_articles,
    load_corpus,
    sample_episode,
    sample_qa_episode,
)
from metaray.data.omniglot import omniglot_pixels
from metaray.distributed.memory import process_memory
from metaray.models import HEADS, SharedBackbone, load_for, prompted_model
from metaray.models.backbone import backbone_config, import_backbone, import_model_code
from metaray.models.finetune import finetune_scores


@dataclass
class TaskResult:
    """One task's contribution to a meta-round: g_i, shape (P, D), and its losses."""

    pseudo_grad: torch.Tensor
    support_loss: float  # mean inner-loop support loss (before each step)
    query_loss: float  # query loss at φ_i (at θ for multitask)
    spec: TaskSpec


@dataclass
class EvalResult:
    """Query scores (%) per head at each adaptation budget, and the adaptation time. The
    heads are the kind's metrics: accuracy per classifier head, or QA's em and f1."""

    spec: TaskSpec
    accuracy: dict[int, dict[str, float]]  # step -> head -> score
    adapt_seconds: float  # wall-clock to adapt at the full budget: inner loop + support encoding + heads
    extra: dict[str, float] = field(default_factory=dict)


def tensor_digest(named) -> str:
    """sha256 over (name, tensor) pairs, in the order given."""
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def source_config(cfg: ExperimentConfig) -> SourceConfig:
    return SourceConfig(
        data_dir=str(cfg.data.resolved_dir()),
        clinc150_val_domains=cfg.data.clinc150_val_domains,
        clinc150_test_domains=cfg.data.clinc150_test_domains,
        xquad_val_articles=cfg.data.xquad_val_articles,
        xquad_test_articles=cfg.data.xquad_test_articles,
        omniglot_val_alphabets=cfg.data.omniglot_val_alphabets,
        omniglot_test_alphabets=cfg.data.omniglot_test_alphabets,
        omniglot_rotations=cfg.data.omniglot_rotations,
    )


class TaskAdapter:
    """Holds one frozen backbone under the prompted model of `cfg.kind` (a classifier or
    a question answerer); `adapt` and `evaluate` are its per-task methods.

    `backbone`: the weights shared through the object store (Ray resolves the reference
    to a read-only, zero-copy view); None loads a private copy. The backbone runs on
    the GPU where one is visible."""

    def __init__(
        self, cfg: ExperimentConfig, backbone: SharedBackbone | None = None, loaded: tuple | None = None
    ) -> None:
        torch.set_num_threads(cfg.ray.torch_threads)
        self.cfg = cfg
        self.sources = source_config(cfg)
        if loaded is None:
            if cfg.kind != "image":  # a Hugging Face backbone
                import_model_code(backbone.config if backbone is not None else backbone_config(cfg.model))
            self.memory_log = {"before_backbone": process_memory()}
            tokenizer, model = import_backbone(backbone) if backbone is not None else load_for(cfg.kind, cfg.model)
            if torch.cuda.is_available():
                model.to("cuda")
            self.memory_log["after_backbone"] = process_memory()
        else:  # (tokenizer, model) placed by the caller, e.g. partitioned by DeepSpeed
            tokenizer, model = loaded
            self.memory_log = {}
        self.backbone = model
        data_dir = self.sources.data_dir
        self.prompted = prompted_model(
            cfg, tokenizer, model, lockstep=cfg.sharded.enabled, pixels=lambda ids: omniglot_pixels(ids, data_dir)
        )

    def memory(self) -> dict[str, dict[str, float]]:
        """This process's memory (MiB) before and after loading the backbone, and now."""
        return {**self.memory_log, "now": process_memory()}

    def backbone_digest(self) -> str:
        """sha256 over every backbone parameter and buffer: equal digests, equal bits."""
        return tensor_digest(sorted(self.backbone.state_dict().items()))

    def init_prompt(self, prompt_cfg: PromptConfig | None = None) -> torch.Tensor:
        return self.prompted.init_prompt(prompt_cfg or self.cfg.prompt)

    def episode(self, spec: TaskSpec) -> Episode | QAEpisode:
        if self.cfg.kind == "qa":
            return sample_qa_episode(spec, load_articles(spec.family, self.sources))
        support = load_corpus(spec.support_family, self.sources) if spec.support_family else None
        return sample_episode(spec, load_corpus(spec.family, self.sources), support)

    def adapt(self, meta_prompt: torch.Tensor, spec: TaskSpec) -> TaskResult:
        """φ_i from k inner steps on the support set, then g_i per `meta.algorithm`."""
        episode = self.episode(spec)
        meta = self.cfg.meta

        def query_loss(prompt: torch.Tensor) -> torch.Tensor:
            return self.prompted.query_loss(prompt, episode)

        if meta.algorithm == "multitask":
            grad, loss = query_gradient(meta_prompt, query_loss)
            return TaskResult(grad, loss, loss, spec)
        loss_fn = self.prompted.support_loss_fn(episode, meta.inner, seed=spec.index)
        result = adapt({"prompt": meta_prompt}, loss_fn, meta.inner)
        support_loss = sum(result.losses) / max(len(result.losses), 1)
        phi = result.adapted_prompt
        if meta.algorithm == "fomaml":
            grad, loss = query_gradient(phi, query_loss)
        else:
            grad = reptile_pseudo_gradient(meta_prompt, phi)
            with torch.no_grad():
                loss = float(query_loss(phi))
        return TaskResult(grad, support_loss, loss, spec)

    def evaluate(
        self, init: torch.Tensor | str | None, spec: TaskSpec, steps: tuple[int, ...], inner: InnerConfig, heads=HEADS
    ) -> EvalResult:
        """Adapt from `init` with budget max(steps) on the support set; score the query
        set after each budget in `steps`. `init=None`: no prompt, no adaptation;
        "finetune": the whole backbone and a new linear layer (images)."""
        episode = self.episode(spec)
        if isinstance(init, str):  # "finetune", the only baseline an adapter runs itself
            start = time.perf_counter()
            lr, scale = self.cfg.eval.finetune_lr, self.cfg.model.scale
            scores = finetune_scores(self.prompted.encoder, episode, steps, lr, scale, inner.views, spec.index)
            return EvalResult(spec, scores, time.perf_counter() - start)
        if init is None:
            scores, support_seconds = self.prompted.score(None, episode, heads)
            return EvalResult(spec, {0: scores}, support_seconds)
        accuracy: dict[int, dict[str, float]] = {}
        scoring = support_seconds = 0.0

        def on_step(step: int, params: dict[str, torch.Tensor]) -> None:
            nonlocal scoring, support_seconds
            if step in steps:
                start = time.perf_counter()
                accuracy[step], support_seconds = self.prompted.score(params["prompt"], episode, heads)
                scoring += time.perf_counter() - start

        budget = dataclasses.replace(inner, steps=max(steps))
        start = time.perf_counter()
        adapt({"prompt": init}, self.prompted.support_loss_fn(episode, budget, seed=spec.index), budget, on_step)
        inner_seconds = time.perf_counter() - start - scoring
        return EvalResult(spec, accuracy, inner_seconds + support_seconds)
