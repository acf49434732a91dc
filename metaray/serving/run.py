"""`metaray serve CONFIG`: the Serve config file's application on an embedded (or the
configured) Ray, on 127.0.0.1 unless the file or `--host` says otherwise."""

from __future__ import annotations

import os
import signal
import sys
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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def with_token(deployments: list[dict] | None, token_env: str) -> list[dict]:
    """The Ingress deployment's options with this process's token in its runtime
    environment: on a cluster (RAY_ADDRESS) the replicas do not inherit the CLI's
    environment, and authorisation would be silently off."""
    token = os.environ.get(token_env)
    out = [dict(d) for d in deployments or []]
    if not token:
        return out
    ingress = next((d for d in out if d.get("name") == "Ingress"), None)
    if ingress is None:
        ingress = {"name": "Ingress"}
        out.append(ingress)
    actor = dict(ingress.get("ray_actor_options") or {})
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), token_env: token}
    ingress["ray_actor_options"] = {**actor, "runtime_env": runtime_env}
    return out


def serve_forever(config: dict, host: str | None, port: int | None) -> None:
    """Run until SIGINT/SIGTERM; then take the app off a joined cluster, or end with the
    embedded Ray (tasks stay in the store)."""
    from ray import serve

    from metaray.config import RayConfig
    from metaray.runtime import connect

    joined = connect(RayConfig(), embedded_cpus=os.cpu_count())  # $RAY_ADDRESS, else an embedded Ray on every core
    http = {"host": host or config["http"].get("host", "127.0.0.1"), "port": port or config["http"].get("port", 8000)}
    token_env = settings_from(config["args"]).token_env
    if http["host"] not in LOOPBACK and not os.environ.get(token_env):
        print(
            f"metaray: warning: serving on {http['host']} without {token_env}: anyone who reaches this port can "
            "create, change and delete tasks; set it to a secret token",
            file=sys.stderr,
            flush=True,
        )
    serve.start(http_options=http)
    app = config["app"]
    serve.run(
        application(config["args"], with_token(app.get("deployments"), token_env)),
        name=app.get("name", "metaray"),
        route_prefix=app.get("route_prefix", "/"),
    )
    print(f"metaray serving on http://{http['host']}:{http['port']} (API docs: /docs)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    if joined:  # the cluster outlives this process: take the app and Serve's actors off it
        serve.shutdown()
    # An embedded Ray, Serve included, ends with this process. (A Ctrl-C or a supervisor's
    # SIGTERM to the process group has reached Ray's own processes already, and
    # serve.shutdown() would wait 30 s for a controller that cannot answer.)


def export_task(config: dict, task_id: str, out: str) -> Path:
    """`metaray export`: the task's latest version as a PEFT prompt-tuning adapter."""
    from metaray.kinds import CLASSIFY
    from metaray.models import resolve_backbone
    from metaray.serving.peft_export import export_peft
    from metaray.serving.store import TaskNotFound, TaskStore
    from metaray.serving.tasks import check_prompt_shape, prompt_reading, served_model

    settings = settings_from(config["args"])
    store = TaskStore(settings.store)
    if not store.exists(task_id) or not store.latest_version(task_id):
        raise TaskNotFound(f"no task {task_id!r} in {store.root}")
    task = store.read(task_id)
    if task.meta["kind"] != CLASSIFY.name:
        raise ConfigError(f"task {task_id!r} is a {task.meta['kind']} task; export writes classification tasks")
    theta, cfg, classifier = served_model(settings.checkpoint, CLASSIFY.name)
    check_prompt_shape(task, theta, prompt_reading(cfg))  # read as the served model reads it
    return export_peft(task, classifier.encoder, resolve_backbone(cfg.model).where, out)
