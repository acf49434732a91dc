"""`ray job submit` against a real local head node: the job trains and checkpoints.

Runs in tests/e2e, before any test of this session starts an in-process Ray:
`ray stop` ends every Ray process on the machine.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
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


@pytest.fixture
def head_node(monkeypatch):
    import ray

    assert not ray.is_initialized(), "ray stop would end this process's Ray too"
    # Clusters run with token authentication on; head and client both say so, and share a
    # token of their own (a fresh machine has no ~/.ray/auth_token).
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    dashboard = free_port()
    start = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}"]
    start += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def submit(head_node: str, job: str, *args: str) -> tuple[str, str]:
    """`ray job submit` with cluster/runtime_env.yaml from the checkout's root; waits for
    the job; (its status line, logs + status for messages)."""
    cmd = [RAY, "job", "submit", "--address", head_node, "--submission-id", job]
    cmd += ["--runtime-env", "cluster/runtime_env.yaml", "--", "metaray", "train", "configs/tiny.yaml", *args]
    # A fresh CLI process reads RAY_AUTH_MODE=token (this process's Ray was imported
    # before it was set, and a client without it is refused); it waits for the job.
    for _ in range(12):  # a head that has just started may have no job agent yet: Ray says so, try again
        logs = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if "No available agent to submit job" not in logs.stderr:
            break
        time.sleep(5)
    status = subprocess.run([RAY, "job", "status", "--address", head_node, job], capture_output=True, text=True)
    return status.stdout, logs.stdout[-3000:] + logs.stderr[-3000:] + status.stdout + status.stderr


def test_job_submitted_through_the_jobs_api_succeeds_and_checkpoints(head_node, data_dir, tmp_path):
    run, job = tmp_path / "run", f"metaray-test-{os.getpid()}"
    # output.dir as a URI: the path a job on a real cluster would give for object storage.
    status, report = submit(head_node, job, f"data.data_dir={data_dir}", f"output.dir=file://{run}")
    assert f"Job '{job}' succeeded" in status, report
    assert (run / "latest").is_file() and (run / (run / "latest").read_text().strip() / "state.safetensors").is_file()
    rounds = [json.loads(line)["round"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2]
    missing = tmp_path / "no-such-data"
    status, report = submit(head_node, f"{job}-bad", f"data.data_dir={missing}", f"output.dir={run}")
    assert f"Job '{job}-bad' failed" in status, report
    assert str(missing) in report, "the job's logs must name the missing path"


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
    assert float(out.stdout.split()[-1]) == 1.0, "the embedded Ray has the config's CPUs, not the head's 2"
