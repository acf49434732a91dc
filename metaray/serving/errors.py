"""What a served task's work can refuse, as exception types with no HTTP in them; the HTTP
layer (`api.py`, `STATUS`) maps each type to its status code in one place."""

from __future__ import annotations

from metaray.errors import MetarayError


class ServiceError(MetarayError):
    """A refusal whose message (or, for `Unprocessable`, error list) is the answer's detail."""

    def __init__(self, detail) -> None:
        super().__init__(detail if isinstance(detail, str) else str(detail))
        self.detail = detail


class Unauthorised(ServiceError):
    """A call that changes state without the bearer token."""


class NotFound(ServiceError):
    """No such task (or it was deleted meanwhile)."""


class Conflict(ServiceError):
    """A taken id, a create that a delete overtook, or a route of another kind's task."""


class TooLarge(ServiceError):
    """Over one of the settings' limits (examples, texts, characters, bytes, pixels)."""


class Unprocessable(ServiceError):
    """A request the schema accepts but the task cannot use; the detail is pydantic's list
    of errors, naming the field."""

    def __init__(self, loc: list, msg: str) -> None:
        super().__init__([{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


class Broken(ServiceError):
    """A task whose files cannot be read (the message names the file, not the store's path)."""


class NotServed(ServiceError):
    """A task kind this server has no model for."""


class StoreFull(ServiceError):
    """The store holds `max_tasks` tasks."""


def too_large(what: str, n: int, limit: int) -> None:
    if n > limit:
        raise TooLarge(f"{what}: {n} is over the limit of {limit}")
