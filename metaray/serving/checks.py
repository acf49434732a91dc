"""Request checks of the task service: sizes against the settings' limits (`TooLarge`),
QA answers that are not spans of their contexts and images that cannot be decoded
(`Unprocessable`)."""

from metaray.kinds import KINDS
from metaray.serving.errors import TooLarge, Unprocessable, too_large
from metaray.serving.images import ImageError, decode_image

# what a classifier's examples and requests carry, per kind (QA tasks carry triples)
INPUT = {kind.name: kind.input_field for kind in KINDS.values() if kind.input_field}


def check_texts(settings, texts: list[str], field: str) -> None:
    for i, text in enumerate(texts):
        too_large(f"{field}[{i}] characters", len(text), settings.max_text_chars)


def check_inputs(settings, kind: str, items: list[str], field: str) -> None:
    """Texts within `max_text_chars`; images (base64) decodable, within `max_image_bytes`."""
    if INPUT[kind] == "text":
        check_texts(settings, items, field)
        return
    for i, data in enumerate(items):
        try:
            decode_image(data, settings.max_image_bytes)
        except ImageError as err:
            if err.too_large:
                raise TooLarge(f"{field}[{i}]: {err}") from err
            raise Unprocessable([*field.split("."), i], f"{field}[{i}]: {err}") from err


def check_examples(settings, kind: str, examples: list[dict]) -> None:
    """Sizes and decodability; and each QA answer must be a span of its context."""
    if kind in INPUT:
        labels = {e["label"] for e in examples}
        too_large("labels", len(labels), settings.max_labels)
        for i, e in enumerate(examples):
            too_large(f"examples[{i}].label characters", len(e["label"]), settings.max_label_chars)
        check_inputs(settings, kind, [e[INPUT[kind]] for e in examples], f"examples.{INPUT[kind]}")
        return
    for i, e in enumerate(examples):
        too_large(f"examples[{i}].context characters", len(e["context"]), settings.max_context_chars)
        check_texts(settings, [e["question"], e["answer"]], f"examples[{i}].question/answer")
        if e["answer"] not in e["context"]:
            raise Unprocessable(["examples", i, "answer"], "the answer must be a span of its context")
