"""bench/autoscale: the Classifier scaling up under a bounded load and back down, on a local
3-node Ray cluster (a head with no CPUs and two worker nodes), over HTTP on 127.0.0.1.

    python bench/autoscale.py --checkpoint runs/demo [--seconds 60] [--concurrency 24] [--out FILE]

1. One task is created (10 classes x 5 shots, BANKING77 texts); every replica, on either
   worker node, serves it from the shared task store.
2. A bounded load: `--concurrency` clients send one-text classify requests for `--seconds`
   (every 10th request a feedback example instead); the number of replicas is sampled twice
   a second throughout, and for `--cooldown` seconds after the load.
3. Two thirds into the load one Classifier replica is killed (as with its node); reads it
   held are sent again to a live replica.
4. Afterwards every acknowledged feedback (202) must be in the task's latest version.
Replicas reserve 0.5 CPU (fractional), autoscale from 1 to 4 at 2 ongoing requests each (an
ongoing request is one of the Ingress's batches of up to 32 texts, 4 in flight per Ingress).
Writes bench/results/autoscale.json (or --out) and autoscale.png beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import ray
from ray import serve
from ray.cluster_utils import Cluster

from metaray.data import DataRegistry
from metaray.eval import write_result
from metaray.plots import figure, png
from metaray.serving.app import application

ROOT = Path(__file__).resolve().parents[1]
APP, DEPLOYMENT = "metaray", "Classifier"
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 4,
    "target_ongoing_requests": 2,
    "upscale_delay_s": 2,
    "downscale_delay_s": 10,
    "metrics_interval_s": 1,
    "look_back_period_s": 5,
}


def replicas() -> dict[str, str]:
    """The running Classifier replicas: actor name -> node id (State API)."""
    from ray.util.state import list_actors

    alive = list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    prefix = f"SERVE_REPLICA::{APP}#{DEPLOYMENT}#"
    return {a.name: a.node_id for a in alive if (a.name or "").startswith(prefix)}


class Sampler(threading.Thread):
    """(seconds since start, running replicas, nodes they are on), twice a second."""

    def __init__(self, start: float) -> None:
        super().__init__(daemon=True)
        self.start_time, self.samples, self.stopped = start, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            now = replicas()
            self.samples.append((time.perf_counter() - self.start_time, len(now), len(set(now.values()))))
            self.stopped.wait(0.5)


async def bounded_load(url: str, task: str, texts: list[str], labels: list[str], args) -> dict:
    """`args.concurrency` clients for `args.seconds`; latency and status per request."""
    results, end, count = [], time.perf_counter() + args.seconds, 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def client(c: int):
            nonlocal count
            while time.perf_counter() < end:
                i, count = count, count + 1
                feedback = i % 10 == 0
                path = f"/v1/tasks/{task}/{'feedback' if feedback else 'classify'}"
                text, label = texts[(i + c) % len(texts)], labels[i % len(labels)]
                body = {"examples": [{"text": text, "label": label}]} if feedback else {"texts": [text]}
                t = time.perf_counter()
                try:
                    async with session.post(url + path, json=body) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError:
                    status = 0
                results.append((path.rsplit("/", 1)[1], status, time.perf_counter() - t))

        await asyncio.gather(*[client(c) for c in range(args.concurrency)])
    return summarise(results)


def summarise(results: list[tuple[str, int, float]]) -> dict:
    latencies = [s for kind, status, s in results if kind == "classify" and 200 <= status < 300]
    q = statistics.quantiles(latencies, n=100)
    failed = [status for _, status, _ in results if not 200 <= status < 300]
    return {
        "requests": len(results),
        "classify_ok": len(latencies),
        "feedback_acknowledged": sum(1 for kind, status, _ in results if kind == "feedback" and status == 202),
        "failed": len(failed),
        "failed_statuses": sorted(set(failed)),
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


def kill_one_replica(after_s: float, killed: list) -> threading.Timer:
    def kill():
        names = sorted(replicas())
        if names:
            ray.kill(ray.get_actor(names[-1], namespace="serve"), no_restart=True)
            killed.append((time.perf_counter(), names[-1]))

    timer = threading.Timer(after_s, kill)
    timer.start()
    return timer


def timeline(samples: list, load_s: float) -> dict:
    up = next((t for t, n, _ in samples if n > 1), None)
    peak = max(n for _, n, _ in samples)
    after = [(t, n) for t, n, _ in samples if t > load_s]
    down = next((t - load_s for t, n in after if n == 1), None)
    return {
        "scale_up_s": up,  # from the load's start to a second replica running
        "peak_replicas": peak,
        "peak_nodes": max(k for _, _, k in samples),
        "scale_down_s": down,  # from the load's end to one replica
    }


def plot(samples: list, load_s: float, killed_at: float | None) -> bytes:
    fig, (ax,) = figure()
    ax.step([t for t, _, _ in samples], [n for _, n, _ in samples], where="post", label="running replicas")
    ax.axvspan(0, load_s, alpha=0.12, label="bounded load")
    if killed_at is not None:
        ax.axvline(killed_at, color="red", linestyle="--", label="replica killed")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Classifier replicas")
    ax.set_ylim(0, AUTOSCALING["max_replicas"] + 0.5)
    ax.legend()
    return png(fig)


def serve_app(args, store: str) -> str:
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": args.port})
    classifier = {
        "name": DEPLOYMENT,
        "ray_actor_options": {"num_cpus": 0.5},
        "max_ongoing_requests": 8,
        "autoscaling_config": AUTOSCALING,
    }
    settings = {"checkpoint": args.checkpoint, "store": store}
    serve.run(application(settings, [classifier]), name=APP, route_prefix="/")
    return f"http://127.0.0.1:{args.port}"


def run(args, corpus) -> dict:
    import requests as http

    url = serve_app(args, tempfile.mkdtemp(prefix="metaray-autoscale-"))
    by_class = corpus.indices_by_class()
    examples = [{"text": corpus.inputs[i], "label": corpus.label_names[c]} for c in range(10) for i in by_class[c][:5]]
    created = http.post(f"{url}/v1/tasks", json={"kind": "classify", "id": "load", "examples": examples}, timeout=300)
    assert created.status_code == 201, created.text
    labels = created.json()["labels"]
    texts = [corpus.inputs[i] for c in range(10, 77) for i in by_class[c][:8]]
    start = time.perf_counter()
    sampler, killed = Sampler(start), []
    sampler.start()
    timer = kill_one_replica(args.seconds * 2 / 3, killed)
    load = asyncio.run(bounded_load(url, "load", texts, labels, args))
    timer.cancel()
    time.sleep(args.cooldown)
    sampler.stopped.set()
    sampler.join()
    deadline = time.time() + 300
    while (info := http.get(f"{url}/v1/tasks/load", timeout=30).json())["pending_feedback"] and time.time() < deadline:
        time.sleep(1)
    load["feedback_lost"] = len(examples) + load["feedback_acknowledged"] - info["examples"]
    killed_at = killed[0][0] - start if killed else None
    return {"load": load, **timeline(sampler.samples, args.seconds), "replica_killed_at_s": killed_at,
            "samples": sampler.samples, "autoscaling": AUTOSCALING, "load_seconds": args.seconds,
            "concurrency": args.concurrency}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs" / "demo"))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cooldown", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "autoscale.json"))
    args = parser.parse_args()
    corpus = DataRegistry(args.data_dir).corpus("banking77")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address)
    try:
        result = run(args, corpus)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
    write_result(result, args.out, "python " + shlex.join(["bench/autoscale.py", *sys.argv[1:]]))
    Path(args.out).with_suffix(".png").write_bytes(plot(result["samples"], args.seconds, result["replica_killed_at_s"]))
    shown = {k: v for k, v in result.items() if k not in ("samples", "autoscaling")}
    print(json.dumps(shown, indent=1))


if __name__ == "__main__":
    main()
