"""The e2e fixtures shared by the HTTP tests and the browser test: one `metaray serve` with
all three kinds of model, trained once per session."""

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from metaray.config import load_config
from metaray.data import DataRegistry
from metaray.serving.images import encode_image

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_core_config(path: Path) -> Path:
    """serve/config.yaml with half a CPU per model replica: the three models (text,
    question answering, images) then fit on this 2-core machine together."""
    tree = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    for deployment in tree["applications"][0]["deployments"]:
        if deployment["name"] != "Ingress":
            deployment["ray_actor_options"] = {"num_cpus": 0.5}
    path.write_text(yaml.safe_dump(tree))
    return path


class Server:
    """`metaray serve` in a subprocess, with all three models; restartable."""

    def __init__(self, checkpoints: dict[str, Path], store: Path, log: Path) -> None:
        self.checkpoints = checkpoints
        self.args = [f"checkpoint={checkpoints['classify']}", f"store={store}", "max_examples=40"]
        self.args += ["max_text_chars=300", "max_texts=16", "adapt.steps=3", "max_image_bytes=100000"]
        self.args += ["max_body_bytes=3000000", "max_labels=8", "max_label_chars=40"]
        self.args += [
            f"qa_checkpoint={checkpoints['qa']}",
            "qa_adapt.steps=2",
            f"image_checkpoint={checkpoints['image']}",
            "image_adapt.steps=3",
            "distill.teacher=all-MiniLM-L6-v2",  # a teacher already installed (bench/distill uses all-mpnet-base-v2)
            "image_distill.teacher=efficientnet-lite0",  # the same, at its own side (bench/distill: Lite2 at 260)
            "image_distill.image_size=64",
            "max_unlabeled=30",
        ]
        self.config = two_core_config(log.parent / "serve.yaml")
        self.port, self.log, self.proc = free_port(), log, None
        self.url = f"http://127.0.0.1:{self.port}"

    def elsewhere(self, log: Path, text_only: bool = False) -> "Server":
        """The same server (checkpoints, store, settings) on a port of its own, not started;
        `text_only`: without its QA and image models (it starts faster)."""
        other = copy.copy(self)
        if text_only:
            others = ("qa_checkpoint=", "image_checkpoint=", "image_distill.")  # the image teacher needs its model
            other.args = [a for a in self.args if not a.startswith(others)]
        other.port, other.log, other.proc = free_port(), log, None
        other.url = f"http://127.0.0.1:{other.port}"
        return other

    def start(self, token: str = TOKEN) -> None:
        """`token`: the server's bearer token ("" serves without one)."""
        env = {**os.environ, "METARAY_SERVE_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
        if not token:
            env.pop("METARAY_SERVE_TOKEN")
        cmd = [sys.executable, "-m", "metaray.cli", "serve", str(self.config), *self.args, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 300
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # proxy up, app still starting
                pass
            time.sleep(2)
        raise AssertionError("server did not come up:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        """SIGTERM to the process group, the embedded Ray's processes included, as a
        terminal's Ctrl-C or a supervisor would; killed, and the test failed, if it has not
        gone within 30 s (it once waited 30 s for Serve's dead controller)."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            log = self.log.read_text()[-3000:]
            raise AssertionError(f"metaray serve did not stop within 30 s of SIGTERM:\n{log}") from None

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=body, timeout=120, **kw)


@pytest.fixture(scope="session")
def corpus(data_dir):
    return DataRegistry(data_dir).corpus("banking77")


@pytest.fixture(scope="session")
def server(data_dir, tiny_lm_dir, tmp_path_factory):
    """All three models: a classification run, a question-answering run on a tiny causal
    LM, and an image run (EfficientNet-Lite0, one round)."""
    tmp = tmp_path_factory.mktemp("serve")
    runs = {"classify": tmp / "run", "qa": tmp / "qa-run", "image": tmp / "image-run"}
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    one_round = ["meta.rounds=1", "meta.eval_every=0", "meta.meta_batch_size=2"]
    # trained in the CLI's own process (`ray.local`): what is served is under test here, and
    # each Ray start would cost the session about 20 s (tests/e2e/test_cli.py trains on Ray)
    for config, run, extra in [
        ("configs/tiny.yaml", runs["classify"], ["model.prompt_position=first"]),  # PEFT's layout: exportable
        ("configs/tiny-qa.yaml", runs["qa"], [f"model.backbone={tiny_lm_dir}", "meta.eval_every=0"]),
        ("configs/omniglot.yaml", runs["image"], one_round),
    ]:
        trained = subprocess.run(
            [sys.executable, "-m", "metaray.cli", "train", config, "--quiet"]
            + [f"data.data_dir={data_dir}", f"output.dir={run}", "output.tensorboard=false", "ray.local=true", *extra],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
    srv = Server(runs, tmp / "store", tmp / "serve.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def drawing(data_dir):
    """(class c, drawing k) of the meta-test alphabets -> base64 PNG."""
    registry = DataRegistry.from_config(load_config("configs/omniglot.yaml", [f"data.data_dir={data_dir}"]).data)
    test = registry.corpus("omniglot/test")
    by_class = test.indices_by_class()
    return lambda c, k: encode_image(registry.pixels([test.inputs[by_class[c][k]]])[0])
