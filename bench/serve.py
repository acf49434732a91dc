"""bench/serve: the Serve app on CPU, over HTTP on 127.0.0.1.

    python bench/serve.py --checkpoint runs/demo [--port 8123] [--out FILE]

1. Raw batched forward throughput of the backbone with a task prompt (texts/s, batch 32,
   1 thread, in this process, no HTTP): the limit for one classifier replica.
2. Time to create a 10-class 5-shot task (BANKING77 texts), 5 tasks, with the
   configured budget and with `steps: 0` (prototypes under θ only).
3. Classify: one text per request at concurrency 1, 8 and 32, a fixed number of
   requests each; p50/p99 latency, throughput, failures.
4. A bounded load test: classify and feedback requests mixed, fixed count; afterwards
   every accepted feedback must be in the task's latest version (zero lost).
5. 1,000 small tasks created and each classified once, all served by one replica
   (multiplex capacity 1,024): the replica's memory growth.
The app runs with one Classifier replica (1 CPU); the load generator has the other core.
Writes bench/results/serve.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import ray
import torch
from ray import serve

from metaray.core import InnerConfig
from metaray.data import DataRegistry
from metaray.eval import write_result
from metaray.serving.app import application
from metaray.serving.tasks import ClassifyRequest, TaskClassifier

ROOT = Path(__file__).resolve().parents[1]


def raw_throughput(checkpoint: str, texts: list[str], labels: list[str]) -> float:
    torch.set_num_threads(1)
    model = TaskClassifier(checkpoint, InnerConfig(steps=5, lr=1e-2, batch_ways=16))
    tensors, _ = model.adapt(texts[:50], labels[:50])
    batch = [ClassifyRequest("t", tensors, tuple(sorted(set(labels[:50]))), tuple(texts[i : i + 32])) for i in (0,)]
    model.classify(batch)  # warm-up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 20:
        for i in range(0, len(texts) - 32, 32):
            model.classify([ClassifyRequest("t", tensors, batch[0].labels, tuple(texts[i : i + 32]))])
            n += 32
    return n / (time.perf_counter() - start)


async def load(url: str, requests: list[tuple[str, dict]], concurrency: int) -> dict:
    """POST every (path, body) with `concurrency` in flight; latency and status per request."""
    latencies, statuses, queue = [], [], list(reversed(requests))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker():
            while queue:
                path, body = queue.pop()
                t = time.perf_counter()
                try:
                    async with session.post(url + path, json=body) as response:
                        await response.read()
                        statuses.append(response.status)
                except aiohttp.ClientError:
                    statuses.append(0)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        seconds = time.perf_counter() - start
    ok = [s for s in statuses if 200 <= s < 300]
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(statuses),
        "failed": len(statuses) - len(ok),
        "seconds": seconds,
        "requests_per_s": len(statuses) / seconds,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


async def post(session, url, body):
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


async def create_tasks(url: str, bodies: list[dict], concurrency: int = 4) -> list[float]:
    seconds = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        sem = asyncio.Semaphore(concurrency)

        async def one(body):
            async with sem:
                t = time.perf_counter()
                status, reply = await post(session, url + "/v1/tasks", body)
                assert status == 201, reply
                seconds.append(time.perf_counter() - t)

        await asyncio.gather(*[one(b) for b in bodies])
    return seconds


def episode(corpus, classes, shots, skip=0):
    by_class = corpus.indices_by_class()
    rows = [(i, c) for c in classes for i in by_class[c][skip : skip + shots]]
    return [{"text": corpus.inputs[i], "label": corpus.label_names[c]} for i, c in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs" / "demo"))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    args = parser.parse_args()
    corpus = DataRegistry(args.data_dir).corpus("banking77")
    texts = list(corpus.inputs[:2000])
    labels = [corpus.label_names[y] for y in corpus.labels[:2000]]
    result: dict = {"raw_texts_per_s": raw_throughput(args.checkpoint, texts, labels)}
    print(f"raw batched forward: {result['raw_texts_per_s']:.1f} texts/s", flush=True)

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    store = tempfile.mkdtemp(prefix="metaray-serve-bench-")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    deployments = [{"name": "Classifier", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}}]
    settings = {"checkpoint": args.checkpoint, "store": store, "multiplex_capacity": 1024, "max_examples": 5000}
    serve.run(application(settings, deployments), name="metaray", route_prefix="/")
    url = f"http://127.0.0.1:{args.port}"
    classifier = serve.get_deployment_handle("Classifier", app_name="metaray")
    try:
        result |= run_http(url, corpus, texts, classifier)
    finally:
        serve.shutdown()
        ray.shutdown()
    command = "python " + shlex.join(["bench/serve.py", *sys.argv[1:]])
    write_result(result, args.out, command)
    print(json_table(json.loads(Path(args.out).read_text())))


def run_http(url: str, corpus, texts: list[str], classifier) -> dict:
    out: dict = {}
    ten_way = [
        {"kind": "classify", "id": f"ten-{i}", "examples": episode(corpus, range(10 * i, 10 * i + 10), 5)}
        for i in range(5)
    ]
    out["create_10way_5shot_s"] = asyncio.run(create_tasks(url, ten_way, concurrency=1))
    print(f"create 10-way 5-shot: {out['create_10way_5shot_s']}", flush=True)
    no_steps = [{**body, "id": f"{body['id']}-0", "steps": 0} for body in ten_way]
    out["create_10way_5shot_0_steps_s"] = asyncio.run(create_tasks(url, no_steps, concurrency=1))
    out["classify"] = {}
    for concurrency, count in ((1, 100), (8, 400), (32, 800)):
        requests = [("/v1/tasks/ten-0/classify", {"texts": [texts[i % len(texts)]]}) for i in range(count)]
        asyncio.run(load(url, requests[:20], concurrency))  # warm-up
        row = asyncio.run(load(url, requests, concurrency))
        row["texts_per_s"] = row["requests_per_s"]
        out["classify"][str(concurrency)] = row
        print(f"classify c={concurrency}: {row}", flush=True)
    out["load_test"] = load_test(url, corpus, texts)
    print(f"load test: {out['load_test']}", flush=True)
    out["thousand_tasks"] = thousand_tasks(url, corpus, classifier)
    print(f"1000 tasks: {out['thousand_tasks']}", flush=True)
    return out


def load_test(url: str, corpus, texts: list[str]) -> dict:
    """600 requests at concurrency 16, every 10th a feedback (one example) on task ten-1."""
    import requests as http

    before = http.get(f"{url}/v1/tasks/ten-1", timeout=30).json()
    labels = before["labels"]
    requests = []
    for i in range(600):
        if i % 10 == 0:
            requests.append(("/v1/tasks/ten-1/feedback", {"examples": [{"text": texts[i], "label": labels[i % 10]}]}))
        else:
            requests.append(("/v1/tasks/ten-1/classify", {"texts": [texts[i]]}))
    row = asyncio.run(load(url, requests, 16))
    deadline = time.time() + 300
    while (info := http.get(f"{url}/v1/tasks/ten-1", timeout=30).json())["pending_feedback"] and time.time() < deadline:
        time.sleep(1)
    row["feedback_sent"] = 60
    row["feedback_lost"] = before["examples"] + 60 - info["examples"]
    row["versions_written"] = info["version"] - before["version"]
    return row


def thousand_tasks(url: str, corpus, classifier) -> dict:
    before = classifier.memory.remote().result()
    bodies = [
        {"kind": "classify", "id": f"small-{i}", "steps": 0, "examples": episode(corpus, (i % 77, (i + 1) % 77), 2)}
        for i in range(1000)
    ]
    start = time.perf_counter()
    created = asyncio.run(create_tasks(url, bodies, concurrency=8))
    create_s = time.perf_counter() - start
    requests = [(f"/v1/tasks/small-{i}/classify", {"texts": [corpus.inputs[i]]}) for i in range(1000)]
    served = asyncio.run(load(url, requests, 8))
    after = classifier.memory.remote().result()
    return {
        "created": len(created),
        "create_seconds": create_s,
        "classify": served,
        "loaded_on_replica": classifier.loaded_tasks.remote().result(),
        "replica_uss_mib_before": before["uss"],
        "replica_uss_mib_after": after["uss"],
        "growth_mib": after["uss"] - before["uss"],
    }


def json_table(result: dict) -> str:
    lines = [f"\nbench/serve, {result['machine']}, {result['date']}"]
    lines.append(f"raw batched forward (batch 32, 1 thread): {result['raw_texts_per_s']:.1f} texts/s")
    c = result["create_10way_5shot_s"]
    lines.append(f"create a 10-way 5-shot task: median {statistics.median(c):.2f} s, max {max(c):.2f} s")
    c0 = result["create_10way_5shot_0_steps_s"]
    lines.append(f"... with steps=0 (prototypes under θ): median {statistics.median(c0):.2f} s")
    lines += ["| concurrency | p50 ms | p99 ms | texts/s | of raw | failed |", "|---|---|---|---|---|---|"]
    for k, row in result["classify"].items():
        share = row["texts_per_s"] / result["raw_texts_per_s"]
        cells = [k, f"{row['p50_ms']:.0f}", f"{row['p99_ms']:.0f}", f"{row['texts_per_s']:.1f}", f"{share:.0%}"]
        lines.append("| " + " | ".join([*cells, str(row["failed"])]) + " |")
    lt = result["load_test"]
    lines.append(f"load test: {lt['requests']} requests, {lt['failed']} failed, feedback lost {lt['feedback_lost']}")
    t = result["thousand_tasks"]
    lines.append(
        f"1,000 tasks: created in {t['create_seconds']:.0f} s, served with {t['classify']['failed']} failures, "
        f"{t['loaded_on_replica']} loaded on one replica, memory growth {t['growth_mib']:.0f} MiB"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
