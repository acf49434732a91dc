"""The versioned HTTP API (FastAPI behind Ray Serve; OpenAPI docs at /docs). It only speaks
HTTP: each route authorises, parses and hands the body to the task service
(`service.py`), and `STATUS` maps the service's refusals to status codes in one place.

Errors: a malformed body is a 422 naming the field (pydantic), as is a QA example whose
answer is not in its context; an unknown task a 404, too many examples or texts, a
text too long, or a context over the model's window, a 413 (limits in the settings); a
taken id a 409, a task whose files cannot be read a 500 naming the file (the replica
keeps serving), a task kind this server has no model for a 501, a full store a 507. With
a token configured, creating, feedback and deleting need `Authorization: Bearer TOKEN`.
Image tasks also take multipart uploads: `/v1/tasks/upload` and
`/v1/tasks/{id}/classify/upload`.
"""

import os
from pathlib import Path

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from ray import serve

from metaray.kinds import CLASSIFY, IMAGE, QA
from metaray.serving import schemas as s
from metaray.serving.errors import (
    Broken,
    Conflict,
    NotFound,
    NotServed,
    ServiceError,
    StoreFull,
    TooLarge,
    Unauthorised,
    Unprocessable,
)
from metaray.serving.guard import Limits, RequestGuard
from metaray.serving.service import TaskService
from metaray.serving.uploads import form_images, validated

STATUS = {
    Unauthorised: 401,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Unprocessable: 422,
    Broken: 500,
    NotServed: 501,
    StoreFull: 507,
}

STATIC = Path(__file__).parent / "static"  # the playground: hand-written, shipped in the package
PLAYGROUND = STATIC / "playground.html"

app = FastAPI(title="metaray", version="1", description="Few-shot tasks on a meta-learned soft prompt.")
app.mount("/static", StaticFiles(directory=STATIC), name="static")
app.add_middleware(RequestGuard, limits=lambda: getattr(app.state, "guard", None))  # before any body is read


@app.exception_handler(ServiceError)
async def refused(request: Request, err: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": err.detail}, status_code=STATUS[type(err)])


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(app)
class api:  # noqa: N801 - the deployment's class; Serve names it "Ingress"
    def __init__(self, settings, classifier, answerer, image_classifier) -> None:
        self.settings = settings
        # None: no checkpoint for that kind
        models = {CLASSIFY.name: classifier, QA.name: answerer, IMAGE.name: image_classifier}
        self.service = TaskService(settings, models)
        app.state.guard = Limits(os.environ.get(settings.token_env, ""), settings.max_body_bytes)

    def _authorise(self, authorization: str | None) -> None:
        """The guard's check again, for calls that reach a route without it (e.g. a test client)."""
        if not app.state.guard.authorised((authorization or "").encode()):
            raise Unauthorised("this call changes state: send Authorization: Bearer TOKEN")

    async def check_health(self) -> None:
        """Serve calls this every few seconds: it also picks up feedback left pending (by a
        stopped replica, or a failed re-adaptation) without waiting for a request."""
        self.service.recover(every_s=60.0)

    @app.get("/", include_in_schema=False)
    async def playground(self) -> HTMLResponse:
        """The playground page (`serving/static/`): try tasks in a browser."""
        return HTMLResponse(PLAYGROUND.read_text())

    @app.get("/healthz")
    async def healthz(self) -> dict:
        self.service.recover()
        return {"status": "ok"}

    @app.post("/v1/tasks", status_code=201)
    async def create(self, body: s.CreateTask, authorization: str | None = Header(default=None)) -> s.TaskInfo:
        self._authorise(authorization)
        return await self.service.create(body)

    @app.post("/v1/tasks/upload", status_code=201)
    async def create_upload(self, request: Request, authorization: str | None = Header(default=None)) -> s.TaskInfo:
        """An image task from a multipart form, each file's field name its label
        (`curl -F alpha=@a1.png -F alpha=@a2.png -F beta=@b1.png ...`); optional text
        fields `id` and `steps`. Checked and stored as the JSON create would be."""
        self._authorise(authorization)
        limits = (self.settings.max_image_bytes, self.settings.max_examples)
        fields, files = await form_images(request, *limits, fields=("id", "steps"))
        examples = [{IMAGE.input_field: data, "label": name} for name, data in files]
        return await self.service.create(validated(s.CreateTask, {"kind": IMAGE.name, **fields, "examples": examples}))

    @app.get("/v1/tasks")
    async def list_tasks(self, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> s.TaskList:
        """A page of tasks in id order; `next_offset` is the next page's (None after the last)."""
        return self.service.list_tasks(offset, limit)

    @app.get("/v1/tasks/{task_id}")
    async def get(self, task_id: str) -> s.TaskInfo:
        return self.service.get(task_id)

    @app.get("/v1/tasks/{task_id}/versions")
    async def versions(self, task_id: str) -> s.VersionList:
        """The versions kept of a task (`keep_versions`), oldest first, with their metrics."""
        return self.service.versions(task_id)

    @app.get("/v1/limits")
    async def limits(self) -> s.ServerLimits:
        """What this server accepts (kinds, sizes, whether a token is needed): the playground
        refuses bad input with these before sending it."""
        return self.service.limits(token_required=bool(app.state.guard.token))

    @app.delete("/v1/tasks/{task_id}", status_code=204)
    async def delete(self, task_id: str, authorization: str | None = Header(default=None)) -> Response:
        self._authorise(authorization)
        self.service.delete(task_id)
        return Response(status_code=204)

    @app.post("/v1/tasks/{task_id}/classify")
    async def classify(self, task_id: str, body: s.ClassifyBody) -> s.ClassifyResult:
        return await self.service.classify(task_id, body)

    @app.post("/v1/tasks/{task_id}/classify/upload")
    async def classify_upload(self, task_id: str, request: Request) -> s.ClassifyResult:
        """An image task's queries as a multipart form of image files, answered in form
        order (`curl -F image=@q1.png -F image=@q2.png ...`)."""
        self.service.require_task(task_id)  # an unknown task is a 404 before any upload is read
        _, files = await form_images(request, self.settings.max_image_bytes, self.settings.max_texts)
        body = validated(s.ClassifyBody, {"images": [data for _, data in files]})
        return await self.service.classify(task_id, body)

    @app.post("/v1/tasks/{task_id}/feedback", status_code=202)
    async def feedback(
        self, task_id: str, body: s.FeedbackBody, authorization: str | None = Header(default=None)
    ) -> s.FeedbackAccepted:
        self._authorise(authorization)
        return await self.service.feedback(task_id, body)

    @app.post("/v1/tasks/{task_id}/answer")
    async def answer(self, task_id: str, body: s.AnswerBody) -> s.AnswerResult:
        """The task's greedy answer to a question on a context (batched on the answerer)."""
        return await self.service.answer(task_id, body)
