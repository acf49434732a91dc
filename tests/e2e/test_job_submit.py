"""`ray job submit` to a real local 3-node cluster (`ray start`: a head and two worker nodes):
the job's adapters spread over both workers, it survives the loss of one, and checkpoints.

Runs in tests/e2e, before any test of this session starts an in-process Ray:
`ray stop` ends every Ray process on the machine.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head_node():
    """A local 3-node cluster started as on real machines: a head that runs only the job's
    driver (0 CPUs) and two worker nodes of 2 CPUs, each with its own raylet port (to kill it
    by); yields the dashboard's address and the workers' raylet ports. One cluster for the
    module (starting and stopping one takes about 40 s); the test that kills a worker node
    runs last."""
    import ray

    assert not ray.is_initialized(), "ray stop would end this process's Ray too"
    with pytest.MonkeyPatch.context() as monkeypatch:
        # Clusters run with token authentication on; head and client both say so, and share a
        # token of their own (a fresh machine has no ~/.ray/auth_token).
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        dashboard, gcs, raylets = free_port(), free_port(), [free_port(), free_port()]
        start = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=0"]
        start += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats"]
        subprocess.run(start, check=True, capture_output=True, timeout=120)
        # Each worker node has its own temporary folder, as on its own machine (nodes sharing one
        # would share, and clean up, each other's unpacked job folders).
        temps = [tempfile.mkdtemp(prefix="ray-node-") for _ in raylets]  # short: socket paths are limited
        try:
            for port, temp in zip(raylets, temps, strict=True):
                worker = [RAY, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2"]
                worker += [f"--node-manager-port={port}", f"--temp-dir={temp}", "--disable-usage-stats"]
                subprocess.run(worker, check=True, capture_output=True, timeout=120)
            yield f"http://127.0.0.1:{dashboard}", raylets
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
            for temp in temps:
                shutil.rmtree(temp, ignore_errors=True)


def ray_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # A fresh CLI process reads RAY_AUTH_MODE=token (this process's Ray was imported
    # before it was set, and a client without it is refused).
    return subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def submit(address: str, job: str, *args: str, wait: bool = True) -> str:
    """`ray job submit` of `metaray train configs/tiny.yaml ARGS` with cluster/runtime_env.yaml
    from the checkout's root; waits for the job where `wait`; the command's output."""
    cmd = ["job", "submit", "--address", address, "--submission-id", job, *([] if wait else ["--no-wait"])]
    cmd += ["--runtime-env", "cluster/runtime_env.yaml", "--", "metaray", "train", "configs/tiny.yaml", *args]
    for _ in range(12):  # a head that has just started may have no job agent yet: Ray says so, try again
        out = ray_cli(*cmd, timeout=600)
        if "No available agent to submit job" not in out.stderr:
            break
        time.sleep(5)
    return out.stdout[-3000:] + out.stderr[-3000:]


def status_of(address: str, job: str) -> str:
    status = ray_cli("job", "status", "--address", address, job)
    return status.stdout + status.stderr


def logs_of(address: str, job: str) -> str:
    logs = ray_cli("job", "logs", "--address", address, job)
    return logs.stdout + logs.stderr


def wait_while(address: str, job: str, going_on, timeout_s: float) -> str:
    """Poll the job's status while `going_on()` and the job runs; its last status."""
    deadline = time.monotonic() + timeout_s
    while going_on() and any(state in (status := status_of(address, job)) for state in ("PENDING", "RUNNING")):
        assert time.monotonic() < deadline, status + logs_of(address, job)[-6000:]
        time.sleep(1)
    return status_of(address, job)


def rounds_logged(run: Path) -> list[int]:
    metrics = run / "metrics.jsonl"
    return [json.loads(line)["round"] for line in metrics.read_text().splitlines()] if metrics.is_file() else []


def test_a_failing_job_names_the_missing_path(head_node, data_dir, tmp_path):
    address, _ = head_node
    missing, job = tmp_path / "no-such-data", f"metaray-test-{os.getpid()}-bad"
    submit(address, job, f"data.data_dir={missing}", f"output.dir={tmp_path / 'run'}")
    status, logs = status_of(address, job), logs_of(address, job)
    assert f"Job '{job}' failed" in status, status + logs[-6000:]
    assert str(missing) in logs, "the job's logs must name the missing path"


def test_an_embedded_run_never_joins_a_cluster_left_on_the_machine(head_node):
    """`ray start` records its cluster for a bare `ray.init()` to join (which then refuses
    num_cpus): with no address configured, metaray starts an embedded Ray of its own."""
    probe = (
        "import ray; from metaray.config import RayConfig; from metaray.runtime import connect\n"
        "connect(RayConfig(num_cpus=1)); print(ray.cluster_resources()['CPU'])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Connecting to existing Ray cluster" not in out.stderr, out.stderr[-3000:]
    assert float(out.stdout.split()[-1]) == 1.0, "the embedded Ray has the config's CPUs, not the cluster's 4"


def test_a_job_on_three_nodes_spreads_its_actors_and_survives_a_lost_worker_node(head_node, data_dir, tmp_path):
    address, raylets = head_node
    run, job = tmp_path / "run", f"metaray-test-{os.getpid()}"
    rounds = 20
    # output.dir as a URI: the path a job on a real cluster would give for object storage.
    args = [f"data.data_dir={data_dir}", f"output.dir=file://{run}", f"meta.rounds={rounds}", "meta.eval_every=0"]
    report = submit(address, job, *args, "ray.placement=spread", wait=False)
    # Once the first round is logged, the actors are up on both worker nodes.
    status = wait_while(address, job, lambda: not rounds_logged(run), 300)
    assert "RUNNING" in status, report + status + logs_of(address, job)[-6000:]
    # The second worker node crashes: its raylet is killed, and its processes end with it.
    subprocess.run(["pkill", "-9", "-f", f"node_manager_port={raylets[1]}"], check=True)
    lost_at = len(rounds_logged(run))
    status, logs = wait_while(address, job, lambda: True, 600), logs_of(address, job)
    assert f"Job '{job}' succeeded" in status, status + logs[-6000:]
    assert "2 adapter actors on 2 nodes" in logs, logs[-6000:]
    assert lost_at < rounds and rounds_logged(run) == list(range(1, rounds + 1)), (lost_at, rounds_logged(run))
    assert (run / "latest").is_file() and (run / (run / "latest").read_text().strip() / "state.safetensors").is_file()
