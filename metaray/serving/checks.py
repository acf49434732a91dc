"""Request checks of the HTTP API: sizes against the settings' limits (413), QA answers
that are not spans of their contexts (422), and a replica's task errors (404 / 500)."""

from fastapi import HTTPException

from metaray.serving.store import TaskNotFound


def too_large(what: str, n: int, limit: int) -> None:
    if n > limit:
        raise HTTPException(413, f"{what}: {n} is over the limit of {limit}")


def unprocessable(loc: list, msg: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def task_error(err: Exception) -> HTTPException:
    """A replica's TaskNotFound (deleted meanwhile) or CorruptTask, without Ray's traceback."""
    cause = getattr(err, "cause", err)
    return HTTPException(404 if isinstance(cause, TaskNotFound) else 500, str(cause))


def check_texts(settings, texts: list[str], field: str) -> None:
    for i, text in enumerate(texts):
        too_large(f"{field}[{i}] characters", len(text), settings.max_text_chars)


def check_examples(settings, kind: str, examples: list[dict]) -> None:
    """Sizes; and each QA answer must be a span of its context."""
    if kind == "classify":
        check_texts(settings, [e["text"] for e in examples], "examples")
        return
    for i, e in enumerate(examples):
        too_large(f"examples[{i}].context characters", len(e["context"]), settings.max_context_chars)
        check_texts(settings, [e["question"], e["answer"]], f"examples[{i}].question/answer")
        if e["answer"] not in e["context"]:
            raise unprocessable(["examples", i, "answer"], "the answer must be a span of its context")
