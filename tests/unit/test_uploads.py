"""Multipart image uploads: real multipart bodies (as `requests` encodes them) through
Starlette's parser into the JSON bodies of the image routes, and their refusals."""

import asyncio
import base64

import pytest
import requests
from fastapi import Request
from fastapi.exceptions import RequestValidationError

from metaray.serving.api import STATUS
from metaray.serving.errors import ServiceError
from metaray.serving.schemas import ClassifyBody, CreateTask
from metaray.serving.uploads import form_images, validated


def form(files: list[tuple[str, tuple[str, bytes]]], data: dict | None = None) -> Request:
    prepared = requests.Request("POST", "http://127.0.0.1/", files=files, data=data or {}).prepare()
    body, sent = prepared.body, False
    body = body.encode() if isinstance(body, str) else body  # a form without files: urlencoded

    async def receive() -> dict:
        nonlocal sent
        chunk, sent = (b"" if sent else body), True
        return {"type": "http.request", "body": chunk, "more_body": False}

    headers = [(b"content-type", prepared.headers["Content-Type"].encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}, receive)


def parse(request: Request, max_bytes: int = 100, max_files: int = 4, fields=("id", "steps")):
    return asyncio.run(form_images(request, max_bytes, max_files, fields))


def test_files_become_labelled_base64_images_in_form_order():
    files = [("alpha", ("a1.png", b"\x89PNG-a1")), ("beta", ("b1.png", b"b1")), ("alpha", ("a2.png", b"a2"))]
    texts, got = parse(form(files, {"id": "glyphs", "steps": "3"}))
    assert texts == {"id": "glyphs", "steps": "3"}
    assert [(name, base64.b64decode(data)) for name, data in got] == [(n, raw) for n, (_, raw) in files]
    body = {"kind": "image", **texts, "examples": [{"image": d, "label": n} for n, d in got]}
    task = validated(CreateTask, body)
    assert task.kind == "image" and task.id == "glyphs" and task.steps == 3 and len(task.examples) == 3


def test_an_oversized_file_is_a_413_naming_it():
    with pytest.raises(ServiceError) as err:
        parse(form([("alpha", ("small.png", b"x")), ("beta", ("huge.png", b"x" * 101))]))
    assert STATUS[type(err.value)] == 413 and "'huge.png'" in err.value.detail and "100 bytes" in err.value.detail


def test_too_many_files_is_a_413():
    with pytest.raises(ServiceError) as err:
        parse(form([("a", (f"{i}.png", b"x")) for i in range(5)]))
    assert STATUS[type(err.value)] == 413 and "image files: 5 is over the limit of 4" in err.value.detail


@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        ([], {"id": "x"}, "no image files"),
        ([("a", ("a.png", b"x"))], {"label": "a"}, "unknown form field 'label'"),
    ],
)
def test_a_form_without_files_or_with_an_unknown_field_is_a_422(files, data, message):
    with pytest.raises(ServiceError) as err:
        parse(form(files, data))
    assert STATUS[type(err.value)] == 422 and message in str(err.value.detail)


def test_invalid_bodies_are_422s_with_the_fields_named_and_no_base64_echoed():
    with pytest.raises(RequestValidationError) as err:
        validated(CreateTask, {"kind": "image", "steps": "many", "examples": [{"image": "QUJD", "label": "a"}] * 2})
    assert {e["loc"] for e in err.value.errors()} >= {("body", "image", "steps")}
    assert all("input" not in e for e in err.value.errors())
    with pytest.raises(RequestValidationError):
        validated(ClassifyBody, {"images": []})
