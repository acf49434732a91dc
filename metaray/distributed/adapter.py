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
from metaray.core import InnerConfig, TaskUpdate, adapt, task_pseudo_gradient
from metaray.core.distill import Lesson
from metaray.data import DataRegistry, Episode, QAEpisode, TaskSpec
from metaray.kinds import kind_of
from metaray.models import HEADS, SharedBackbone
from metaray.models.backbone import backbone_config, import_backbone, import_model_code
from metaray.models.classifier import DISTILLED
from metaray.models.finetune import finetune_scores
from metaray.models.teacher import TeacherOutput
from metaray.runtime import process_memory

TEACHER_PREFIX = "teacher."  # the teacher's own scores, beside the student's in the unprompted pass's
TEACHER_SCORE = TEACHER_PREFIX + "probe"
TAUGHT_CACHE = 256  # test tasks whose teacher output an adapter keeps (all the draws or episodes of a setting)


@dataclass
class TaskResult(TaskUpdate):
    """One task's contribution to a meta-round: the core's TaskUpdate and its task."""

    spec: TaskSpec | None = None


@dataclass
class EvalResult:
    """Query scores (%) per head at each adaptation budget, and the adaptation time. The
    heads are the kind's metrics: accuracy per classifier head, or QA's em and f1."""

    spec: TaskSpec
    scores: dict[int, dict[str, float]]  # step -> head -> score
    adapt_seconds: float  # wall-clock to adapt at the full budget: inner loop + support encoding + heads
    extra: dict[str, float] = field(default_factory=dict)


EvalUnit = tuple[torch.Tensor | str | None, TaskSpec]  # (init prompt, "finetune" or None; task)


def tensor_digest(named) -> str:
    """sha256 over (name, tensor) pairs, in the order given."""
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
        self.kind = kind_of(cfg)
        self.registry = DataRegistry.from_config(cfg.data)
        if loaded is None:
            if self.kind.hugging_face:
                import_model_code(backbone.config if backbone is not None else backbone_config(cfg.model))
            self.memory_log = {"before_backbone": process_memory()}
            tokenizer, model = import_backbone(backbone) if backbone is not None else self.kind.load_backbone(cfg.model)
            if torch.cuda.is_available():
                model.to("cuda")
            self.memory_log["after_backbone"] = process_memory()
        else:  # (tokenizer, model) placed by the caller, e.g. partitioned by DeepSpeed
            tokenizer, model = loaded
            self.memory_log = {}
        self.backbone = model
        self.prompted = self.kind.prompted_model(
            cfg, tokenizer, model, lockstep=cfg.sharded.enabled, pixels=self.registry.pixels
        )
        self.teacher = self.kind.teacher(cfg, pixels=self.registry.pixels) if cfg.distill.enabled else None
        self._taught: dict[TaskSpec, TeacherOutput] = {}  # the teacher's output per test task, for every method

    def memory(self) -> dict[str, dict[str, float]]:
        """This process's memory (MiB) before and after loading the backbone, and now."""
        return {**self.memory_log, "now": process_memory()}

    def backbone_digest(self) -> str:
        """sha256 over every backbone parameter and buffer: equal digests, equal bits."""
        return tensor_digest(sorted(self.backbone.state_dict().items()))

    def init_prompt(self, prompt_cfg: PromptConfig | None = None) -> torch.Tensor:
        return self.prompted.init_prompt(prompt_cfg or self.cfg.prompt)

    def episode(self, spec: TaskSpec) -> Episode | QAEpisode:
        return self.kind.episode(self.registry, spec)

    def adapt(self, meta_prompt: torch.Tensor, spec: TaskSpec) -> TaskResult:
        """g_i for one task per `meta.algorithm` (`core.task_pseudo_gradient`); with
        `meta.distill`, the teacher's labels of the task's queries enter both losses."""
        episode = self.episode(spec)
        meta = self.cfg.meta
        losses = {}
        if meta.distill:  # the queries are the task's unlabeled inputs: the teacher labels them
            episode = dataclasses.replace(episode, unlabeled_inputs=episode.query_inputs)
            taught = self.teacher.label(episode).logits
            losses = {"lesson": Lesson(dataclasses.replace(self.cfg.distill, weight=meta.distill), taught)}
        update = task_pseudo_gradient(
            meta.algorithm,
            meta_prompt,
            self.prompted.support_loss_fn(episode, meta.inner, seed=spec.index, **losses),
            lambda prompt: self.prompted.query_loss(prompt, episode, meta.objective(), **losses),
            meta.inner,
        )
        return TaskResult(update.pseudo_grad, update.support_loss, update.query_loss, spec)

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
        # the teacher's labels serve the distilled head and the teacher's own score only
        # (meta-validation with a teacher scores neither)
        taught = self._teacher_output(spec, episode) if init is None or DISTILLED in heads else None
        lesson = Lesson(self.cfg.distill, taught.logits) if taught is not None else None
        if init is None:
            scores, support_seconds = self.prompted.score(None, episode, heads, inner, spec.index, lesson)
            if taught is not None:
                scores[TEACHER_SCORE] = taught.accuracy
            return EvalResult(spec, {0: scores}, support_seconds)
        scores: dict[int, dict[str, float]] = {}
        scoring = support_seconds = 0.0

        def on_step(step: int, params: dict[str, torch.Tensor]) -> None:
            nonlocal scoring, support_seconds
            if step in steps:
                start = time.perf_counter()
                prompt = params["prompt"]
                scores[step], support_seconds = self.prompted.score(prompt, episode, heads, inner, spec.index, lesson)
                scoring += time.perf_counter() - start

        budget = dataclasses.replace(inner, steps=max(steps))
        start = time.perf_counter()
        adapt({"prompt": init}, self.prompted.support_loss_fn(episode, budget, seed=spec.index), budget, on_step)
        inner_seconds = time.perf_counter() - start - scoring
        return EvalResult(spec, scores, inner_seconds + support_seconds)

    def _teacher_output(self, spec: TaskSpec, episode) -> TeacherOutput | None:
        """The teacher's labels of a test task, computed once for all the methods scored on it."""
        if self.teacher is None:
            return None
        if spec not in self._taught:
            if len(self._taught) >= TAUGHT_CACHE:
                self._taught.pop(next(iter(self._taught)))
            self._taught[spec] = self.teacher.label(episode)
        return self._taught[spec]
