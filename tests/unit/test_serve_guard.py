"""The request guard answers before the app reads a body; the token reaches cluster replicas."""

import asyncio

import pytest

from metaray.serving.guard import Limits, RequestGuard, changes_state
from metaray.serving.run import with_token


@pytest.mark.parametrize(
    ("method", "path", "changes"),
    [("POST", "/v1/tasks", True), ("POST", "/v1/tasks/upload", True), ("POST", "/v1/tasks/t/feedback", True),
     ("DELETE", "/v1/tasks/t", True), ("POST", "/v1/tasks/t/classify", False), ("GET", "/v1/tasks", False),
     ("POST", "/v1/tasks/t/answer", False), ("GET", "/healthz", False)],
)  # fmt: skip
def test_the_calls_that_change_state(method, path, changes):
    assert changes_state(method, path) is changes


def call(limits, method, path, headers, chunks):
    """Run the guard in front of an app that reads the whole body; (status, body read by the app)."""
    read, sent = [], []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            read.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = iter(
        [{"type": "http.request", "body": c, "more_body": i + 1 < len(chunks)} for i, c in enumerate(chunks)]
    )

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(RequestGuard(app, lambda: limits)(scope, receive, send))
    return sent[0]["status"], b"".join(read)


def test_the_guard_answers_before_the_body_is_read():
    limits = Limits("secret", max_body_bytes=10)
    assert call(limits, "POST", "/v1/tasks", [], [b"x" * 5]) == (401, b"")  # no token: not a byte read
    auth = [(b"authorization", b"Bearer secret")]
    assert call(limits, "POST", "/v1/tasks", auth, [b"x" * 5]) == (200, b"x" * 5)
    assert call(limits, "POST", "/v1/tasks/t/classify", [(b"content-length", b"50000000")], [b"x"]) == (413, b"")
    status, read = call(limits, "POST", "/v1/tasks/t/classify", [], [b"x" * 6, b"x" * 6, b"x" * 6])
    assert status == 413 and read == b"x" * 6  # streamed: cut off at the chunk that passes the limit
    assert call(Limits("", 10), "DELETE", "/v1/tasks/t", [], [b""])[0] == 200  # no token configured: open


def test_the_token_reaches_the_ingress_replicas_through_their_runtime_env(monkeypatch):
    deployments = [{"name": "Ingress", "ray_actor_options": {"num_cpus": 0}}, {"name": "Classifier"}]
    monkeypatch.delenv("METARAY_SERVE_TOKEN", raising=False)
    assert with_token(deployments, "METARAY_SERVE_TOKEN") == deployments
    monkeypatch.setenv("METARAY_SERVE_TOKEN", "s3cret")
    ingress = with_token(deployments, "METARAY_SERVE_TOKEN")[0]["ray_actor_options"]
    assert ingress == {"num_cpus": 0, "runtime_env": {"env_vars": {"METARAY_SERVE_TOKEN": "s3cret"}}}
    assert deployments[0]["ray_actor_options"] == {"num_cpus": 0}  # the config is not modified
