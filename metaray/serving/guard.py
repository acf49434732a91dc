"""Limits before work: an ASGI layer in front of the API that answers before FastAPI reads
a request body. A call that changes state (create, upload, feedback, delete) without the
bearer token is a 401 at once, and a body over `max_body_bytes` is a 413: at once where
its Content-Length says so, else as soon as that many bytes have streamed in (nothing more
is read, and the app's own answer is dropped)."""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass

# (method, path) of the calls that change state; the rest (classify, answer, reads) are open
STATE_CHANGING = (
    ("POST", re.compile(r"/v1/tasks(/upload)?")),
    ("POST", re.compile(r"/v1/tasks/[^/]+/feedback")),
    ("DELETE", re.compile(r"/v1/tasks/[^/]+")),
)


@dataclass(frozen=True)
class Limits:
    token: str  # "" : state-changing calls are open
    max_body_bytes: int

    def authorised(self, header: bytes | None) -> bool:
        return not self.token or hmac.compare_digest(header or b"", f"Bearer {self.token}".encode())


def changes_state(method: str, path: str) -> bool:
    return any(method == m and pattern.fullmatch(path) for m, pattern in STATE_CHANGING)


async def respond(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware; `limits()` gives the replica's Limits (None: not set up yet)."""

    def __init__(self, app, limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send) -> None:
        limits = self.limits() if scope["type"] == "http" else None
        if limits is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = scope["path"][len(scope.get("root_path", "")) :] or "/"
        if changes_state(scope["method"], path) and not limits.authorised(headers.get(b"authorization")):
            await respond(send, 401, "this call changes state: send Authorization: Bearer TOKEN")
            return
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limits.max_body_bytes:
            await respond(
                send, 413, f"request body: {length.decode()} bytes, over the limit of {limits.max_body_bytes}"
            )
            return
        await self.app(scope, *self._bounded(limits.max_body_bytes, receive, send))

    @staticmethod
    def _bounded(limit: int, receive, send):
        """(receive, send) that stop a body streaming past `limit` with a 413."""
        state = {"seen": 0, "answered": False}

        async def bounded_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    if not state["answered"]:
                        state["answered"] = True
                        await respond(send, 413, f"request body: over the limit of {limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not state["answered"]:
                await send(message)

        return bounded_receive, guarded_send
