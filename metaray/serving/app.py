"""The Ray Serve application: a FastAPI ingress, the classifier and the answerer.

    Ingress (FastAPI, /v1/...)  --adapt-->      Classifier: frozen encoder once per replica,
                                --classify-->   task prompts multiplexed by "id@version",
                                                requests batched (serve.batch)
                                --adapt-->      Answerer: frozen causal LM once per replica,
                                --answer-->     the same multiplexing and batching
                                --classify-->   ImageClassifier: the Classifier over a frozen
                                                CNN and base64 images (kind: image)
    Each model is deployed when its checkpoint is given (`checkpoint`, `qa_checkpoint`,
    `image_checkpoint`);
    a task of a kind this server has no model for is a 501 naming the setting.

Tasks live in the `TaskStore` (a folder), so any replica serves any task and tasks
survive a restart. `build_app(args)` is the import path `serve deploy` uses
(serve/config.yaml); `metaray serve` runs the same application on an embedded Ray.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import torch
from ray import serve

from metaray.config import ConfigError, build
from metaray.core import InnerConfig
from metaray.core.distill import DistillConfig
from metaray.kinds import CLASSIFY, IMAGE, QA, kind_named
from metaray.kinds.base import check_budget, check_teacher_side
from metaray.runtime import process_memory
from metaray.serving.api import api
from metaray.serving.store import TaskNotFound, TaskStore
from metaray.serving.tasks import (
    SERVED_HEADS,
    AnswerRequest,
    ClassifyRequest,
    TaskAnswerer,
    TaskClassifier,
    check_prompt_shape,
)

LONG_CONTEXT = ("refuse", "head")


@dataclass(frozen=True)
class ServeSettings:
    """The application's `args` in serve/config.yaml."""

    checkpoint: str = ""  # classification run folder (its latest checkpoint) or checkpoint file / URI
    qa_checkpoint: str = ""  # question-answering run (kind: qa), for `kind: qa` tasks and /answer
    image_checkpoint: str = ""  # image run (kind: image), for `kind: image` tasks
    store: str = "runs/serve-tasks"  # task store folder (shared by every replica)
    # the budget per task: 2 steps on mini-episodes of 2 examples per class keep a 10-way
    # 5-shot task under 3 s on one CPU (bench/serve); a request may ask for fewer steps
    adapt: InnerConfig = field(default_factory=lambda: InnerConfig(steps=2, lr=1e-2, batch_ways=16, batch_shots=2))
    # what a classification task (text or image) answers with: a linear head fitted on its
    # examples (probe; BANKING77 77-way 10-shot 84.8 against 81.6 for prototypes) | proto
    head: str = "probe"
    max_examples: int = 1000  # per task (creation and feedback together): more is a 413
    max_labels: int = 100  # per classification task: more is a 413
    max_label_chars: int = 100  # per label: longer is a 413
    max_body_bytes: int = 16 * 2**20  # per request body, checked while it streams in: more is a 413
    keep_versions: int = 3  # versions kept per task (older ones and the feedback they all include are deleted)
    max_tasks: int = 10000  # tasks in the store: a create beyond it is a 507
    max_text_chars: int = 2000  # per text: longer is a 413
    max_texts: int = 256  # per classify request: more is a 413
    multiplex_capacity: int = 256  # task prompts kept loaded per classifier replica (each a few KiB)
    max_batch_size: int = 32  # classify requests batched into one forward pass
    batch_wait_s: float = 0.005
    token_env: str = "METARAY_SERVE_TOKEN"  # if this variable is set, state-changing calls need its bearer token
    threads: int = 1  # torch threads per model replica
    # question answering: 4 Adam steps on 2 examples at a time (bench/qa's budget)
    qa_adapt: InnerConfig = field(default_factory=lambda: InnerConfig(steps=4, lr=0.1, batch_shots=2))
    # images: bench/image's budget, 20 Adam steps with 2 warped views of each example (~5 s for 5 classes)
    image_adapt: InnerConfig = field(default_factory=lambda: InnerConfig(steps=20, lr=1e-2, views=2))
    long_context: str = "refuse"  # a context over the model's window: refuse (413) | head (read its first tokens)
    max_context_chars: int = 20000  # per QA context: longer is a 413
    max_answer_batch: int = 8  # /answer requests batched into one generation pass
    max_image_bytes: int = 1_000_000  # per image (base64-decoded): larger is a 413
    # distillation: a teacher (distill.teacher, e.g. all-mpnet-base-v2) loaded beside each text
    # classifier replica fits the head of a task that has unlabeled texts to its soft labels;
    # image_distill the same for image tasks (e.g. efficientnet-lite2 at image_size 260)
    distill: DistillConfig = field(default_factory=DistillConfig)
    image_distill: DistillConfig = field(default_factory=DistillConfig)
    max_unlabeled: int = 10_000  # unlabeled inputs per task (creation and feedback together): more is a 413

    def __post_init__(self) -> None:
        if not (self.checkpoint or self.qa_checkpoint or self.image_checkpoint):
            raise ConfigError(
                "serving needs checkpoint (classification), qa_checkpoint (question answering) or image_checkpoint"
            )
        if self.head not in SERVED_HEADS:
            raise ConfigError(f"head must be one of {SERVED_HEADS}, got {self.head!r}")
        if self.long_context not in LONG_CONTEXT:
            raise ConfigError(f"long_context must be one of {LONG_CONTEXT}, got {self.long_context!r}")
        for kind in (CLASSIFY, QA, IMAGE):
            check_budget(kind.name, kind.rules, kind.budget_setting, getattr(self, kind.budget_setting))
        for kind in (CLASSIFY, IMAGE):
            check_teacher_setting(self, kind)

    def budget(self, kind: str) -> InnerConfig:
        """The adaptation budget of a task of `kind`."""
        return getattr(self, kind_named(kind).budget_setting)

    def teacher(self, kind: str) -> DistillConfig | None:
        """The distillation teacher of a task of `kind`; None where it has none."""
        setting = kind_named(kind).distill_setting
        teacher = getattr(self, setting) if setting else None
        return teacher if teacher is not None and teacher.enabled else None


def check_teacher_setting(settings: ServeSettings, kind) -> None:
    """A served teacher fits a classifier's linear head on its inputs: refuse one without
    the kind's checkpoint or with the prototype head, and an image side for a text teacher."""
    setting, teacher = kind.distill_setting, getattr(settings, kind.distill_setting)
    if not teacher.enabled:
        return
    if not (getattr(settings, kind.checkpoint_setting) and settings.head == "probe"):
        raise ConfigError(
            f"{setting}.teacher={teacher.teacher!r} fits the linear head of {kind.name} tasks: set "
            f"{kind.checkpoint_setting} and head=probe, or unset {setting}.teacher"
        )
    check_teacher_side(kind.name, kind.rules, setting, teacher)


def settings_from(args: dict) -> ServeSettings:
    return build(ServeSettings, args)


def task_loader(store: TaskStore, capacity: int, to_request, theta: torch.Tensor, reading: dict):
    """Serve's multiplexed loader of `task_key`s (an LRU of `capacity` per replica); a key
    whose creation is gone (deleted, perhaps created again) is TaskNotFound, a task whose
    prompt is not of the served θ's shape, or was adapted for a model that reads it
    otherwise (`reading`), CorruptTask (`check_prompt_shape`)."""

    async def load_task(key: str):
        task_id, incarnation, version = key.split("@")
        task = await asyncio.to_thread(store.read, task_id, int(version))
        if task.meta.get("incarnation", "") != incarnation:
            raise TaskNotFound(task_id)
        check_prompt_shape(task, theta, reading)
        return to_request(key, task)

    return serve.multiplexed(max_num_models_per_replica=capacity)(load_task)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class Classifier:
    """One frozen encoder per replica; adapts tasks and classifies for them. Deployed
    twice: for texts ("Classifier") and for images ("ImageClassifier", kind "image")."""

    def __init__(self, settings: ServeSettings, kind: str = CLASSIFY.name) -> None:
        checkpoint = getattr(settings, kind_named(kind).checkpoint_setting)
        self.model = TaskClassifier(
            checkpoint, settings.budget(kind), settings.threads, kind, settings.head, settings.teacher(kind)
        )
        self.load_task = task_loader(
            TaskStore(settings.store),
            settings.multiplex_capacity,
            lambda key, task: ClassifyRequest(key, task.tensors, tuple(task.meta["labels"]), ()),
            self.model.meta_prompt,
            self.model.reading,
        )
        self._batch.set_max_batch_size(settings.max_batch_size)
        self._batch.set_batch_wait_timeout_s(settings.batch_wait_s)

    async def adapt(self, texts: list[str], labels: list[str], steps: int | None, unlabeled=()) -> tuple[dict, dict]:
        return await asyncio.to_thread(self.model.adapt, texts, labels, steps, unlabeled)

    async def classify(self, texts: list[str]) -> list[dict]:
        """Texts of the task named by the request's multiplexed model id ("id@version")."""
        task = await self.load_task(serve.get_multiplexed_model_id())
        return await self._batch(ClassifyRequest(task.key, task.tensors, task.labels, tuple(texts)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batch(self, requests: list[ClassifyRequest]) -> list[list[dict]]:
        # On the event loop, not a worker thread: with one CPU per replica, handing each
        # batch to a thread cost 40% of the throughput (GIL hand-offs; measured 32 against
        # 52 texts/s at concurrency 32). Requests arriving meanwhile form the next batch.
        return self.model.classify(requests)

    def memory(self) -> dict[str, float]:
        """This replica's memory (MiB; see `process_memory`)."""
        return process_memory()

    def loaded_tasks(self) -> int:
        """How many task prompts this replica holds (for the benchmark)."""
        wrapper = getattr(self.load_task.__wrapped__, "__serve_multiplex_wrapper", None)  # Serve keeps it there
        return len(wrapper.models) if wrapper is not None else 0


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class Answerer:
    """One frozen causal LM per replica; adapts QA tasks and answers their questions."""

    def __init__(self, settings: ServeSettings) -> None:
        self.model = TaskAnswerer(
            settings.qa_checkpoint, settings.budget(QA.name), settings.long_context, settings.threads
        )
        self.load_task = task_loader(
            TaskStore(settings.store),
            settings.multiplex_capacity,
            lambda key, task: AnswerRequest(key, task.tensors["prompt"], ()),
            self.model.meta_prompt,
            self.model.reading,
        )
        self._batch.set_max_batch_size(settings.max_answer_batch)

    async def adapt(self, examples: list[dict], steps: int | None) -> tuple[dict, dict]:
        return await asyncio.to_thread(self.model.adapt, examples, steps)

    async def answer(self, questions: list[tuple[str, str]]):
        """(context, question) pairs of the task named by the multiplexed model id."""
        task = await self.load_task(serve.get_multiplexed_model_id())
        return await self._batch(AnswerRequest(task.key, task.prompt, tuple(map(tuple, questions))))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batch(self, requests: list[AnswerRequest]) -> list:
        return self.model.answer(requests)  # on the event loop, as the classifier's batches


def application(args: dict, deployments: list[dict] | None = None):
    """The app; `deployments` are serve/config.yaml's per-deployment options (autoscaling,
    resources), which `serve deploy` applies itself. A model without a checkpoint is not
    deployed."""
    settings = settings_from(args)
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in deployments or []}
    classifier = Classifier.options(**options.get("Classifier", {})).bind(settings) if settings.checkpoint else None
    answerer = Answerer.options(**options.get("Answerer", {})).bind(settings) if settings.qa_checkpoint else None
    images = None
    if settings.image_checkpoint:
        images = Classifier.options(**{"name": "ImageClassifier", **options.get("ImageClassifier", {})})
        images = images.bind(settings, IMAGE.name)
    return api.options(**options.get("Ingress", {})).bind(settings, classifier, answerer, images)


def build_app(args: dict):
    """The import path of serve/config.yaml: `metaray.serving.app:build_app`."""
    return application(args)
