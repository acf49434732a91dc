"""The task service: what every route of the HTTP API does, without HTTP. It creates,
lists, reads and deletes tasks in the `TaskStore`, classifies and answers through the
model deployments (batched per task), takes feedback and re-adapts in the background.
It refuses with the exception types of `errors.py`; `api.py` maps them to status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import ray
from ray import serve

from metaray.kinds import KINDS, QA, kind_named
from metaray.models import ContextTooLong
from metaray.serving.checks import INPUT, check_examples, check_inputs, check_texts
from metaray.serving.errors import Broken, Conflict, NotFound, NotServed, StoreFull, TooLarge, Unprocessable, too_large
from metaray.serving.images import FORMATS as IMAGE_FORMATS
from metaray.serving.schemas import (
    AnswerBody,
    AnswerResult,
    ClassifyBody,
    ClassifyResult,
    CreateTask,
    FeedbackAccepted,
    FeedbackBody,
    ServerLimits,
    TaskInfo,
    TaskList,
    VersionInfo,
    VersionList,
)
from metaray.serving.store import CorruptTask, TaskExists, TaskNotFound, TaskStore, task_key

log = logging.getLogger("ray.serve")
MODEL_SETTING = {kind.name: kind.checkpoint_setting for kind in KINDS.values()}


def task_error(err: Exception) -> NotFound | Broken:
    """A replica's TaskNotFound (deleted meanwhile) or CorruptTask, without Ray's traceback."""
    cause = getattr(err, "cause", err)
    return NotFound(str(cause)) if isinstance(cause, TaskNotFound) else Broken(str(cause))


REPLICA_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


async def on_a_live_replica(call, attempts: int = 3):
    """A read (classify, answer) whose replica dies under it (killed, its node lost) is sent
    again, and Serve routes it to a live replica: reads change nothing, so the client sees
    an answer, not a 500. Writes (adapt) are not resent."""
    for attempt in range(attempts):
        try:
            return await call()
        except REPLICA_LOST:
            if attempt + 1 == attempts:
                raise
            log.warning("a replica was lost under a read; sending it again")
            await asyncio.sleep(0.2 * (attempt + 1))


class TaskService:
    """One per ingress replica. `models`: kind name -> the kind's deployment handle (None
    where this server has no checkpoint for it)."""

    def __init__(self, settings, models: dict) -> None:
        self.settings = settings
        self.store = TaskStore(settings.store, settings.keep_versions)
        self.store.clean_stale()  # a crash's leftovers
        self.models = models
        self.decoding = asyncio.Semaphore(2)  # image checks decode off the event loop, two at a time
        self.readapting: dict[str, asyncio.Task] = {}
        self.recovered = 0.0  # when tasks with pending feedback were last looked for
        self.meta_cache: dict[tuple[str, str, int], dict] = {}  # (id, incarnation, version) -> metadata
        self._classify_batch.set_max_batch_size(settings.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(settings.batch_wait_s)

    # -- tasks -----------------------------------------------------------------------

    async def create(self, body: CreateTask) -> TaskInfo:
        self.recover()
        self._model(body.kind)
        examples = [e.model_dump() for e in body.examples]
        too_large("examples", len(examples), self.settings.max_examples)
        unlabeled = list(getattr(body, "unlabeled", []))  # classification tasks only
        await self._check_unlabeled(body.kind, unlabeled, 0)
        await self._checked(check_examples, body.kind, examples)
        steps = None if body.steps is None else min(body.steps, self.settings.budget(body.kind).steps)
        task_id = body.id or uuid.uuid4().hex[:16]
        if len(self.store.ids()) >= self.settings.max_tasks:
            raise StoreFull(f"the store holds max_tasks={self.settings.max_tasks} tasks: delete some first")
        try:
            incarnation = self.store.claim(task_id)
        except TaskExists as err:
            raise Conflict(f"task {task_id!r} already exists") from err
        try:
            tensors, metrics = await self._adapt(body.kind, examples, steps, unlabeled)
            labels = sorted({e["label"] for e in examples}) if body.kind in INPUT else []
            meta = {"kind": body.kind, "labels": labels, "examples": examples, "metrics": metrics, "feedback": []}
            meta |= {"unlabeled": unlabeled} if unlabeled else {}
            self.store.write_version(task_id, 1, tensors, meta, incarnation)
            return self._info(self.store.read_meta(task_id, 1))
        except TaskNotFound as err:  # deleted while being created (and perhaps created again)
            raise Conflict(f"task {task_id!r} was deleted while it was being created") from err
        except BaseException:
            with contextlib.suppress(TaskNotFound):  # deleted meanwhile, or another creation now
                self.store.delete(task_id, incarnation)  # a failed create leaves nothing behind
            raise

    def list_tasks(self, offset: int, limit: int) -> TaskList:
        """A page of tasks in id order; `next_offset` is the next page's (None after the last)."""
        tasks, corrupt = [], []
        ids = self.store.ids()
        for task_id in ids[offset : offset + limit]:
            try:
                tasks.append(self._info(self.store.latest_good(task_id)))
            except TaskNotFound:  # still being created, or just deleted
                continue
            except CorruptTask:
                corrupt.append(task_id)
        next_offset = offset + limit if offset + limit < len(ids) else None
        return TaskList(tasks=tasks, corrupt=corrupt, next_offset=next_offset)

    def get(self, task_id: str) -> TaskInfo:
        try:
            return self._info(self._meta(task_id))
        except CorruptTask as err:  # a feedback file that cannot be read
            raise Broken(str(err)) from err

    def versions(self, task_id: str) -> VersionList:
        """The versions kept of a task, oldest first, each with its adaptation metrics."""
        self._meta(task_id)  # unknown: NotFound
        found, corrupt = [], []
        for version in self.store.versions(task_id):
            try:
                meta = self.store.read_meta(task_id, version)
            except TaskNotFound:  # pruned meanwhile
                continue
            except CorruptTask:
                corrupt.append(version)
                continue
            examples, feedback = len(meta["examples"]), len(meta.get("feedback", []))
            found.append(VersionInfo(version=version, examples=examples, feedback=feedback, metrics=meta["metrics"]))
        return VersionList(id=task_id, versions=found, corrupt=corrupt)

    def limits(self, token_required: bool) -> ServerLimits:
        s = self.settings
        return ServerLimits(
            kinds=[kind for kind, model in self.models.items() if model is not None],
            token_required=token_required,
            max_examples=s.max_examples,
            max_labels=s.max_labels,
            max_label_chars=s.max_label_chars,
            max_text_chars=s.max_text_chars,
            max_texts=s.max_texts,
            max_context_chars=s.max_context_chars,
            max_image_bytes=s.max_image_bytes,
            max_body_bytes=s.max_body_bytes,
            image_formats=list(IMAGE_FORMATS),
            max_unlabeled=s.max_unlabeled,
            teacher=s.distill.teacher,
            image_teacher=s.image_distill.teacher,
        )

    def delete(self, task_id: str) -> None:
        try:  # no metadata needed: a task whose create died (no version) can be deleted too
            self.store.delete(task_id)
        except (ValueError, TaskNotFound) as err:
            raise NotFound(f"no task {task_id!r}") from err

    # -- inference -------------------------------------------------------------------

    async def classify(self, task_id: str, body: ClassifyBody) -> ClassifyResult:
        meta = self._meta(task_id)
        kind = meta["kind"]
        if kind not in INPUT:
            raise Conflict(f"task {task_id!r} is a {kind} task; use /answer")
        self._model(kind)
        field = f"{INPUT[kind]}s"
        items = getattr(body, field)
        if items is None:
            raise Unprocessable([field], f"task {task_id!r} is a {kind} task: send {field}")
        too_large(field, len(items), self.settings.max_texts)
        await self._checked(check_inputs, kind, items, field)
        predictions = await self._classify_batch((kind, task_key(meta), items))
        if isinstance(predictions, (TaskNotFound, CorruptTask)):  # deleted meanwhile, or unreadable
            raise task_error(predictions)
        if body.top_k is not None:
            for p in predictions:
                p["scores"] = dict(sorted(p["scores"].items(), key=lambda kv: -kv[1])[: body.top_k])
        return ClassifyResult(id=task_id, version=meta["version"], predictions=predictions)

    def require_task(self, task_id: str) -> None:
        """Before an upload of queries is read: the task exists (else `NotFound`)."""
        self._meta(task_id)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=4)
    async def _classify_batch(self, calls: list[tuple[str, str, list[str]]]) -> list:
        """Concurrent classify requests become one classifier call per task: the
        per-request work stays here, off the replica that runs the forward pass. Several
        batches are in flight, so the classifier never waits for the next one (one at a
        time halved the throughput). A task that fails answers its own requests with the
        error, not the others'."""
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, (kind, key, _) in enumerate(calls):
            by_key.setdefault((kind, key), []).append(i)
        out: list = [None] * len(calls)

        async def one(kind_key: tuple[str, str], members: list[int]) -> None:
            handle = self.models[kind_key[0]].options(multiplexed_model_id=kind_key[1])
            try:
                rows = await on_a_live_replica(
                    lambda: handle.classify.remote([t for i in members for t in calls[i][2]])
                )
            except (TaskNotFound, CorruptTask) as err:
                cause = getattr(err, "cause", err)  # the replica's own exception, without Ray's traceback
                for i in members:
                    out[i] = cause
                return
            for i in members:
                out[i], rows = rows[: len(calls[i][2])], rows[len(calls[i][2]) :]

        await asyncio.gather(*(one(key, members) for key, members in by_key.items()))
        return out

    async def answer(self, task_id: str, body: AnswerBody) -> AnswerResult:
        """The task's greedy answer to a question on a context (batched on the answerer)."""
        meta = self._meta(task_id)
        if meta["kind"] in INPUT:
            raise Conflict(f"task {task_id!r} is a {meta['kind']} task; use /classify")
        too_large("context characters", len(body.context), self.settings.max_context_chars)
        check_texts(self.settings, [body.question], "question")
        handle = self._model(QA.name).options(multiplexed_model_id=task_key(meta))
        try:
            # its answers, or its refusal
            result = await on_a_live_replica(lambda: handle.answer.remote([(body.context, body.question)]))
        except (TaskNotFound, CorruptTask) as err:
            raise task_error(err) from err
        if isinstance(result, ContextTooLong):
            raise TooLarge(f"context: {result}; shorten it, or serve with long_context=head")
        return AnswerResult(id=task_id, version=meta["version"], answer=result[0])

    # -- feedback and re-adaptation ----------------------------------------------------

    async def feedback(self, task_id: str, body: FeedbackBody) -> FeedbackAccepted:
        meta = self._meta(task_id)
        examples = [e.model_dump() for e in body.examples]
        fields = {INPUT[meta["kind"]], "label"} if meta["kind"] in INPUT else {"context", "question", "answer"}
        if examples and set(examples[0]) != fields:
            raise Unprocessable(["examples"], f"a {meta['kind']} task's examples have the fields {sorted(fields)}")
        labels = set(meta.get("labels", []))
        for i, example in enumerate(examples):
            if meta["kind"] in INPUT and example["label"] not in labels:
                msg = f"unknown label {example['label']!r}; task {task_id!r} has {sorted(labels)}"
                raise Unprocessable(["examples", i, "label"], msg)
        pending, unlabeled = split_feedback(self._pending(task_id, meta).values()), list(body.unlabeled)
        total = len(meta["examples"]) + len(pending[0]) + len(examples)
        too_large("examples with feedback", total, self.settings.max_examples)
        await self._check_unlabeled(meta["kind"], unlabeled, len(meta.get("unlabeled", [])) + len(pending[1]))
        await self._checked(check_examples, meta["kind"], examples)
        try:
            entries = examples + [{UNLABELED: text} for text in unlabeled]
            name = self.store.add_feedback(task_id, entries, meta.get("incarnation", ""))
        except TaskNotFound as err:  # deleted meanwhile
            raise NotFound(f"no task {task_id!r}") from err
        self._schedule(task_id)
        return FeedbackAccepted(id=task_id, feedback=name, version=meta["version"])

    def recover(self, every_s: float | None = None) -> None:
        """Re-adapt tasks whose feedback arrived but was never adapted: once per replica at
        its first request, and every `every_s` seconds from the health check."""
        now = time.monotonic()
        if self.recovered and (every_s is None or now - self.recovered < every_s):
            return
        self.recovered = now
        for task_id in self.store.pending_ids():  # only tasks that received feedback
            try:
                if self._pending(task_id, self.store.latest_good(task_id)):
                    self._schedule(task_id)
                else:
                    self.store.clear_pending(task_id)
            except (TaskNotFound, CorruptTask):
                continue

    def _schedule(self, task_id: str) -> None:
        self.readapting = {k: t for k, t in self.readapting.items() if not t.done()}
        running = self.readapting.get(task_id)
        if running is None or running.done():
            self.readapting[task_id] = asyncio.get_running_loop().create_task(self._readapt(task_id))

    async def _readapt(self, task_id: str) -> None:
        """New versions until every feedback file is included (another replica may write
        a version first: then start again from it)."""
        while True:
            try:
                latest = self.store.latest_version(task_id)
                meta = {k: v for k, v in self.store.latest_good(task_id).items() if k != "fallback_from"}
            except (TaskNotFound, CorruptTask):
                return
            pending = self._pending(task_id, meta)
            if not pending:
                self.store.clear_pending(task_id)
                return
            added, texts = split_feedback(pending.values())
            examples, unlabeled = meta["examples"] + added, meta.get("unlabeled", []) + texts
            try:
                tensors, metrics = await self._adapt(meta["kind"], examples, meta["metrics"].get("steps"), unlabeled)
                included = [*meta.get("feedback", []), *pending]
                new = {**meta, "examples": examples, "metrics": metrics, "feedback": included}
                new |= {"unlabeled": unlabeled} if unlabeled else {}
                self.store.write_version(task_id, latest + 1, tensors, new, meta.get("incarnation", ""))
            except FileExistsError:  # another replica wrote this version: start again from it
                continue
            except TaskNotFound:  # deleted (and perhaps created again): never write into another creation
                return
            except Exception:  # the feedback stays on disk, pending; the next feedback or health check retries
                log.exception("re-adapting task %r failed", task_id)
                return

    # -- helpers -----------------------------------------------------------------------

    def _meta(self, task_id: str) -> dict:
        """The latest version's metadata (cached per creation and version: a version never
        changes, and a task deleted and created again is another creation)."""
        try:
            incarnation = self.store.incarnation(task_id)
            version = self.store.latest_version(task_id)
            key = (task_id, incarnation, version)
            if key not in self.meta_cache:
                meta = self.store.latest_good(task_id)  # a torn newest version: the one before
                if meta.get("incarnation", "") != incarnation:  # deleted and created again meanwhile
                    raise TaskNotFound(task_id)
                if len(self.meta_cache) >= 4096:
                    self.meta_cache.pop(next(iter(self.meta_cache)))
                self.meta_cache[key] = meta
            return self.meta_cache[key]
        except CorruptTask as err:  # a ValueError too: first
            raise Broken(str(err)) from err
        except (ValueError, TaskNotFound) as err:  # a bad id names no task
            raise NotFound(f"no task {task_id!r}") from err

    def _pending(self, task_id: str, meta: dict) -> dict[str, list[dict]]:
        return self.store.feedback(task_id, exclude=set(meta.get("feedback", [])))

    def _info(self, meta: dict) -> TaskInfo:
        return TaskInfo(
            id=meta["id"],
            kind=meta["kind"],
            version=meta["version"],
            labels=meta.get("labels", []),
            examples=len(meta["examples"]),
            unlabeled=len(meta.get("unlabeled", [])),
            pending_feedback=len(self._pending(meta["id"], meta)),
            metrics=meta.get("metrics", {}),
            fallback_from=meta.get("fallback_from", []),
        )

    async def _checked(self, check, *args) -> None:
        """A request check (`checks.py`: sizes, labels, image decoding) in a worker thread,
        at most two at a time: a request's images never block the event loop."""
        async with self.decoding:
            await asyncio.to_thread(check, self.settings, *args)

    def _model(self, kind: str):
        if self.models[kind] is None:
            raise NotServed(f"this server has no {kind} model: serve it with {MODEL_SETTING[kind]}=RUN_FOLDER")
        return self.models[kind]

    async def _adapt(self, kind: str, examples: list[dict], steps: int | None, unlabeled=()) -> tuple[dict, dict]:
        """φ (and, for classification, prototypes and the linear head, distilled where the
        task has unlabeled inputs) from the examples, on the kind's model."""
        if kind not in INPUT:  # question answering: (context, question, answer) examples
            return await self._model(kind).adapt.remote(examples, steps)
        inputs, labels = [e[INPUT[kind]] for e in examples], [e["label"] for e in examples]
        if unlabeled:
            return await self._model(kind).adapt.remote(inputs, labels, steps, list(unlabeled))
        return await self._model(kind).adapt.remote(inputs, labels, steps)

    async def _check_unlabeled(self, kind: str, inputs: list[str], held: int) -> None:
        """Unlabeled inputs: for a classification task (texts or images) on a server with a
        teacher of its kind (`ServeSettings.teacher`), within `max_unlabeled` with the `held`
        ones the task has, each within `max_text_chars` or decodable within `max_image_bytes`."""
        if not inputs:
            return
        if kind not in INPUT:
            msg = f"unlabeled inputs are for classification tasks (texts or images), and this is a {kind} task"
            raise Unprocessable(["unlabeled"], msg)
        if self.settings.teacher(kind) is None:
            named = kind_named(kind)
            msg = (
                f"this server has no distillation teacher of {kind} tasks to label them: serve with "
                f"{named.distill_setting}.teacher={named.teacher_example}"
            )
            raise Unprocessable(["unlabeled"], msg)
        too_large(f"unlabeled {INPUT[kind]}s", held + len(inputs), self.settings.max_unlabeled)
        await self._checked(check_inputs, kind, inputs, "unlabeled")


UNLABELED = "unlabeled"  # a feedback file's entry {UNLABELED: input} is an input without a label


def split_feedback(batches) -> tuple[list[dict], list[str]]:
    """(labelled examples, unlabeled inputs) of feedback files' entries, in order."""
    entries = [e for batch in batches for e in batch]
    return [e for e in entries if UNLABELED not in e], [e[UNLABELED] for e in entries if UNLABELED in e]
