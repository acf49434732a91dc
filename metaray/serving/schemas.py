"""The HTTP API's request and response bodies (pydantic: a bad body is a 422 naming the field)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from metaray.serving.store import TASK_ID

TaskId = Annotated[str, Field(pattern=f"^(?:{TASK_ID.pattern})$", description="letters, digits, '-', '_'; at most 64")]
Text = Annotated[str, Field(min_length=1)]
UNLABELED = (
    "inputs of the task without labels (texts; base64 images for an image task): a server with a distillation "
    "teacher of the task's kind (distill.teacher, image_distill.teacher) fits the task's head to the teacher's "
    "soft labels of them and of the examples (a 422 on a server without one)"
)


class LabelledText(BaseModel):
    text: str = Field(min_length=1)
    label: str = Field(min_length=1)


class LabelledImage(BaseModel):
    image: str = Field(min_length=1, description="base64 of a PNG / JPEG / ... file, grayscale or RGB")
    label: str = Field(min_length=1)


class QAExample(BaseModel):
    context: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)


class _LabelledTask(BaseModel):
    """A task from labelled examples: at least two labels."""

    id: TaskId | None = None
    steps: int | None = Field(default=None, ge=0, description="adaptation steps; at most the server's budget")

    @model_validator(mode="after")
    def _two_labels(self) -> _LabelledTask:
        if len({e.label for e in self.examples}) < 2:
            raise ValueError(f"examples: a {self.kind} task needs examples of at least two labels")
        return self


class ClassifyTask(_LabelledTask):
    """A text classification task from labelled texts."""

    kind: Literal["classify"]
    examples: list[LabelledText] = Field(min_length=2)
    unlabeled: list[Text] = Field(default=[], description=UNLABELED)


class ImageTask(_LabelledTask):
    """An image classification task from labelled images."""

    kind: Literal["image"]
    examples: list[LabelledImage] = Field(min_length=2)
    unlabeled: list[Text] = Field(default=[], description=UNLABELED)


class QATask(BaseModel):
    """A question-answering task from a few questions on contexts, each answer a span of its context."""

    kind: Literal["qa"]
    id: TaskId | None = None
    examples: list[QAExample] = Field(min_length=1)
    steps: int | None = Field(default=None, ge=0, description="adaptation steps; at most the server's budget")


CreateTask = Annotated[ClassifyTask | ImageTask | QATask, Field(discriminator="kind")]


class TaskInfo(BaseModel):
    id: str
    kind: str
    version: int
    labels: list[str] = []
    examples: int
    unlabeled: int = Field(default=0, description="unlabeled inputs the task's head was distilled on")
    pending_feedback: int = 0
    metrics: dict = {}
    fallback_from: list[int] = Field(default=[], description="newer versions that could not be read (skipped)")


class TaskList(BaseModel):
    tasks: list[TaskInfo]
    corrupt: list[str] = Field(default=[], description="tasks whose files cannot be read (skipped)")
    next_offset: int | None = Field(default=None, description="the next page's offset; none after the last page")


class VersionInfo(BaseModel):
    version: int
    examples: int
    feedback: int = Field(description="feedback files this version includes")
    metrics: dict = {}


class VersionList(BaseModel):
    id: str
    versions: list[VersionInfo] = Field(description="the versions kept (the server's keep_versions), oldest first")
    corrupt: list[int] = Field(default=[], description="versions whose files cannot be read (skipped)")


class ServerLimits(BaseModel):
    """What this server accepts, so a client can refuse bad input before sending it."""

    kinds: list[str] = Field(description="the task kinds this server has a model for")
    token_required: bool = Field(description="state-changing calls need Authorization: Bearer TOKEN")
    max_examples: int
    max_labels: int
    max_label_chars: int
    max_text_chars: int
    max_texts: int
    max_context_chars: int
    max_image_bytes: int
    max_body_bytes: int
    image_formats: list[str]
    max_unlabeled: int = Field(description="unlabeled inputs per task")
    teacher: str = Field(description="the text tasks' distillation teacher; empty: their unlabeled texts are refused")
    image_teacher: str = Field(
        default="", description="the image tasks' distillation teacher; empty: their unlabeled images are refused"
    )


class ClassifyBody(BaseModel):
    """Texts for a classification task, images (base64) for an image task."""

    texts: list[str] | None = Field(default=None, min_length=1)
    images: list[str] | None = Field(default=None, min_length=1)
    top_k: int | None = Field(default=None, ge=1, description="each answer's scores for its top_k labels only")

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyBody:
        if (self.texts is None) == (self.images is None):
            raise ValueError("send texts or images, not both and not neither")
        return self


class Prediction(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class ClassifyResult(BaseModel):
    id: str
    version: int
    predictions: list[Prediction]


class FeedbackBody(BaseModel):
    """Corrected examples: labelled texts (or images) for a classification (image) task,
    answered questions for a QA task; and, for a classification task, unlabeled inputs to distil on."""

    examples: list[LabelledText] | list[LabelledImage] | list[QAExample] = []
    unlabeled: list[Text] = Field(default=[], description=UNLABELED)

    @model_validator(mode="after")
    def _something(self) -> FeedbackBody:
        if not (self.examples or self.unlabeled):
            raise ValueError("send examples, unlabeled inputs, or both")
        return self


class FeedbackAccepted(BaseModel):
    id: str
    feedback: str
    version: int = Field(description="the version now served; the re-adapted one follows in the background")


class AnswerBody(BaseModel):
    context: str = Field(min_length=1)
    question: str = Field(min_length=1)


class AnswerResult(BaseModel):
    id: str
    version: int
    answer: str
