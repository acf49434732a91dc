"""`metaray serve CONFIG`: the Serve config file's application on an embedded (or the
configured) Ray, on 127.0.0.1 unless the file or `--host` says otherwise."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import yaml

from metaray.checkpoint import resolve_checkpoint
from metaray.config import ConfigError, apply_override
from metaray.serving.app import application, settings_from

IMPORT_PATH = "metaray.serving.app:build_app"


def load_serve_config(path: str | Path, overrides: list[str]) -> dict:
    """The Serve config's first application, with dotted overrides on its `args`;
    validated (settings and checkpoint) before anything starts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"serve config {path} not found")
    tree = yaml.safe_load(path.read_text()) or {}
    apps = tree.get("applications") or []
    if not apps or apps[0].get("import_path") != IMPORT_PATH:
        raise ConfigError(f"{path}: applications[0].import_path must be {IMPORT_PATH}")
    app = apps[0]
    args = dict(app.get("args") or {})
    for override in overrides:
        apply_override(args, override)
    settings = settings_from(args)
    for checkpoint in filter(None, (settings.checkpoint, settings.qa_checkpoint, settings.image_checkpoint)):
        resolve_checkpoint(checkpoint, "latest")  # a missing checkpoint fails here, naming it
    return {"http": tree.get("http_options") or {}, "app": app, "args": args}


def serve_forever(config: dict, host: str | None, port: int | None) -> None:
    """Run until SIGINT/SIGTERM; then shut Serve down (tasks stay in the store)."""
    from ray import serve

    from metaray.config import RayConfig
    from metaray.runtime import connect

    connect(RayConfig(), embedded_cpus=os.cpu_count())  # $RAY_ADDRESS, else an embedded Ray on every core
    http = {"host": host or config["http"].get("host", "127.0.0.1"), "port": port or config["http"].get("port", 8000)}
    serve.start(http_options=http)
    app = config["app"]
    serve.run(
        application(config["args"], app.get("deployments")),
        name=app.get("name", "metaray"),
        route_prefix=app.get("route_prefix", "/"),
    )
    print(f"metaray serving on http://{http['host']}:{http['port']} (API docs: /docs)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()


def export_task(config: dict, task_id: str, out: str) -> Path:
    """`metaray export`: the task's latest version as a PEFT prompt-tuning adapter."""
    from metaray.kinds import CLASSIFY
    from metaray.models import resolve_backbone
    from metaray.serving.peft_export import export_peft
    from metaray.serving.store import TaskNotFound, TaskStore
    from metaray.serving.tasks import served_model

    settings = settings_from(config["args"])
    store = TaskStore(settings.store)
    if not store.exists(task_id) or not store.latest_version(task_id):
        raise TaskNotFound(f"no task {task_id!r} in {store.root}")
    task = store.read(task_id)
    if task.meta["kind"] != CLASSIFY.name:
        raise ConfigError(f"task {task_id!r} is a {task.meta['kind']} task; export writes classification tasks")
    _, model_cfg, classifier = served_model(settings.checkpoint, CLASSIFY.name)
    return export_peft(task, classifier.encoder, resolve_backbone(model_cfg).where, out)
