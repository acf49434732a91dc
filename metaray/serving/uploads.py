"""Images as multipart/form-data uploads (`curl -F`): each form becomes the JSON body of
the matching route (images as base64), so both share one validation path and one store
format. A file over `max_image_bytes` is a 413 naming it; a form without files, or with
a text field the route does not take, a 422."""

from __future__ import annotations

import base64

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from metaray.serving.errors import TooLarge, Unprocessable, too_large


async def form_images(
    request: Request, max_bytes: int, max_files: int, fields: tuple[str, ...] = ()
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(the form's text fields, [(field name, base64 of the file)] in form order)."""
    async with request.form(max_files=max_files + 1, max_fields=len(fields) + 8) as form:
        texts, files = {}, []
        for name, value in form.multi_items():
            if not isinstance(value, UploadFile):
                if name not in fields:
                    takes = f"the text fields {list(fields)} and" if fields else "only"
                    raise Unprocessable([name], f"unknown form field {name!r}: this route takes {takes} image files")
                texts[name] = value
                continue
            too_large("image files", len(files) + 1, max_files)
            raw = await value.read(max_bytes + 1)
            if len(raw) > max_bytes:
                what = f"file {value.filename or '?'!r} (field {name!r})"
                raise TooLarge(f"{what}: over the limit of {max_bytes} bytes")
            files.append((name, base64.b64encode(raw).decode()))
    if not files:
        raise Unprocessable(["files"], "no image files: send multipart/form-data, e.g. curl -F LABEL=@drawing.png")
    return texts, files


def validated(schema, body: dict):
    """`body` as the route's JSON schema would parse it: a 422 with the same error list."""
    try:
        return TypeAdapter(schema).validate_python(body)
    except ValidationError as err:
        errors = [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]
        raise RequestValidationError(errors) from err  # no "input": it may be megabytes of base64
