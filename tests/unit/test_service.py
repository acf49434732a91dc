"""The task service without HTTP: its refusals are exception types, each mapped to one
status code by the API's table. Run on a real task store; no model deployments (a server
without a checkpoint for a kind), so what needs a model is refused as `NotServed`."""

import asyncio
import inspect

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from metaray.config import ConfigError
from metaray.core.distill import DistillConfig
from metaray.serving import errors
from metaray.serving.api import STATUS
from metaray.serving.app import ServeSettings
from metaray.serving.images import encode_image
from metaray.serving.schemas import AnswerBody, ClassifyBody, CreateTask, FeedbackBody
from metaray.serving.service import TaskService


@pytest.fixture
def service(tmp_path):
    models = {"classify": None, "qa": None, "image": None}
    return TaskService(ServeSettings(checkpoint="runs/unused", store=str(tmp_path / "tasks"), max_tasks=1), models)


def stored(service: TaskService, task_id: str, kind: str, labels: list[str]) -> None:
    """A task written to the store as a create would write it."""
    incarnation = service.store.claim(task_id)
    examples = [{"text": f"{label} example", "label": label} for label in labels]
    meta = {"kind": kind, "labels": labels, "examples": examples, "metrics": {}, "feedback": []}
    service.store.write_version(task_id, 1, {"prompt": torch.zeros(2, 4)}, meta, incarnation)


def test_every_refusal_has_exactly_one_status():
    kinds = {c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ServiceError)}
    assert set(STATUS) == kinds - {errors.ServiceError}
    assert len(set(STATUS.values())) == len(STATUS)


def test_unknown_or_malformed_ids_are_not_found(service):
    for task_id in ("nope", "bad id\n", "../etc"):
        with pytest.raises(errors.NotFound):
            service.get(task_id)
        with pytest.raises(errors.NotFound):
            service.delete(task_id)
        with pytest.raises(errors.NotFound):
            asyncio.run(service.classify(task_id, ClassifyBody(texts=["hi"])))


def test_a_kind_without_a_model_is_not_served(service):
    body = TypeAdapter(CreateTask).validate_python(
        {"kind": "classify", "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}
    )
    with pytest.raises(errors.NotServed, match="checkpoint=RUN_FOLDER"):
        asyncio.run(service.create(body))
    assert service.store.ids() == []


def test_routes_of_another_kind_conflict_and_feedback_names_the_bad_label(service):
    stored(service, "t1", "classify", ["a", "b"])
    assert service.get("t1").labels == ["a", "b"]
    with pytest.raises(errors.Conflict, match="use /classify"):
        asyncio.run(service.answer("t1", AnswerBody(context="c", question="q")))
    with pytest.raises(errors.Unprocessable) as err:
        asyncio.run(service.feedback("t1", FeedbackBody(examples=[{"text": "z", "label": "c"}])))
    assert err.value.detail[0]["loc"] == ["body", "examples", 0, "label"]
    service.models["classify"] = object()  # never called: the size check refuses first
    with pytest.raises(errors.TooLarge, match="texts: 257"):
        asyncio.run(service.classify("t1", ClassifyBody(texts=["x"] * 257)))


def test_a_full_store_refuses_creation_and_a_deleted_task_is_gone(service):
    stored(service, "t1", "classify", ["a", "b"])
    service.models["classify"] = object()  # never called: the quota refuses first
    body = TypeAdapter(CreateTask).validate_python(
        {"kind": "classify", "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}
    )
    with pytest.raises(errors.StoreFull, match="max_tasks=1"):
        asyncio.run(service.create(body))
    assert [t.id for t in service.list_tasks(0, 10).tasks] == ["t1"]
    service.delete("t1")
    with pytest.raises(errors.NotFound):
        service.get("t1")
    assert service.list_tasks(0, 10).tasks == []


def test_a_read_whose_replica_is_lost_is_sent_again_a_bounded_number_of_times():
    """`on_a_live_replica`: a lost replica (Ray's own error types) means send again, up to 3
    tries; any other error is the answer at once."""
    import ray

    from metaray.serving.service import on_a_live_replica

    tries: list[int] = []

    def replica(lost: int, error: Exception):
        async def call():
            tries.append(1)
            if len(tries) <= lost:
                raise error
            return ["a"]

        return call

    assert asyncio.run(on_a_live_replica(replica(2, ray.exceptions.ActorDiedError()))) == ["a"] and len(tries) == 3
    tries.clear()
    with pytest.raises(ray.exceptions.ActorDiedError):
        asyncio.run(on_a_live_replica(replica(3, ray.exceptions.ActorDiedError())))
    assert len(tries) == 3
    tries.clear()
    with pytest.raises(errors.NotFound):
        asyncio.run(on_a_live_replica(replica(1, errors.NotFound("gone"))))
    assert len(tries) == 1


def test_unlabeled_inputs_need_a_teacher_of_the_task_s_kind(service, tmp_path):
    stored(service, "words", "classify", ["a", "b"])
    stored(service, "pics", "image", ["a", "b"])
    stored(service, "reading", "qa", [])
    with pytest.raises(errors.Unprocessable, match="no distillation teacher of classify tasks .* distill.teacher="):
        asyncio.run(service.feedback("words", FeedbackBody(unlabeled=["an unlabeled text"])))
    taught = TaskService(
        ServeSettings(checkpoint="runs/unused", store=str(tmp_path / "tasks"), distill=DistillConfig(teacher="t")), {}
    )
    with pytest.raises(errors.Unprocessable, match="no distillation teacher of image tasks .* image_distill.teacher="):
        asyncio.run(taught.feedback("pics", FeedbackBody(unlabeled=["aGVsbG8="])))
    with pytest.raises(errors.Unprocessable, match="for classification tasks .* and this is a qa task"):
        asyncio.run(taught.feedback("reading", FeedbackBody(unlabeled=["a text"])))
    with pytest.raises(ValueError, match="send examples, unlabeled inputs, or both"):
        FeedbackBody(examples=[], unlabeled=[])
    assert service.store.feedback("words") == {} and taught.store.feedback("pics") == {}, "a refusal stored feedback"


def test_an_image_teacher_s_unlabeled_images_are_decoded_before_anything_is_stored(tmp_path):
    settings = ServeSettings(
        image_checkpoint="runs/unused", store=str(tmp_path / "tasks"), image_distill=DistillConfig(teacher="t")
    )
    taught = TaskService(settings, {})
    stored(taught, "pics", "image", ["a", "b"])
    with pytest.raises(errors.Unprocessable, match=r"unlabeled\[1\]: not a decodable image"):
        blank = encode_image(np.zeros((8, 8), dtype=np.uint8))
        asyncio.run(taught.feedback("pics", FeedbackBody(unlabeled=[blank, "aGVsbG8="])))
    assert taught.store.feedback("pics") == {}, "a refusal stored feedback"


def test_a_teacher_is_served_for_its_kind_s_linear_head():
    teacher = DistillConfig(teacher="all-mpnet-base-v2")
    with pytest.raises(ConfigError, match="fits the linear head of classify tasks: set checkpoint"):
        ServeSettings(qa_checkpoint="runs/qa", distill=teacher)
    with pytest.raises(ConfigError, match="fits the linear head of classify tasks"):
        ServeSettings(checkpoint="runs/x", head="proto", distill=teacher)
    with pytest.raises(ConfigError, match="fits the linear head of image tasks: set image_checkpoint"):
        ServeSettings(checkpoint="runs/x", image_distill=DistillConfig(teacher="efficientnet-lite2"))
    with pytest.raises(ConfigError, match="distill.image_size=260 is an image teacher's input side"):
        ServeSettings(checkpoint="runs/x", distill=DistillConfig(teacher="all-mpnet-base-v2", image_size=260))
    image = DistillConfig(teacher="efficientnet-lite2", image_size=260)
    served = ServeSettings(checkpoint="runs/x", image_checkpoint="runs/y", distill=teacher, image_distill=image)
    assert served.teacher("classify") is teacher and served.teacher("image") is image and served.teacher("qa") is None
