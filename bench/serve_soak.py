"""bench/serve_soak: a bounded soak of the Serve app over HTTP on 127.0.0.1.

    python bench/serve_soak.py --checkpoint runs/demo [--clients 32] [--ops 25] [--out FILE]

`--clients` concurrent clients each run `--ops` operations on the same 8 task ids, drawn
from a fixed seed: classify (60%), feedback (15%), delete and create again (15%), read
(10%). Creation n of task i has the labels `i{i}c{n}a`, `i{i}c{n}b`, so an answer that
mixes creations, or names a creation the task has never had, is caught. Then: no 5xx,
no answer mixing creations, every accepted feedback of each task's final creation in its
latest version (none lost), and the store's size with `keep_versions` versions a task.
Writes bench/results/serve_soak.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import ray
from ray import serve

from metaray.data import DataRegistry
from metaray.eval import write_result
from metaray.serving.app import application

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"soak-{i}" for i in range(8)]
OPS = ["classify"] * 12 + ["feedback"] * 3 + ["recreate"] * 3 + ["read"] * 2


class Soak:
    def __init__(self, url: str, texts: list[str], token_headers: dict) -> None:
        self.url, self.texts, self.headers = url, texts, token_headers
        self.creations = itertools.count()
        self.statuses: Counter = Counter()
        self.mixed: list[dict] = []  # answers whose labels come from more than one creation
        self.accepted: Counter = Counter()  # (id, creation prefix) -> accepted feedback examples

    def body(self, task_id: str) -> dict:
        prefix = f"i{IDS.index(task_id)}c{next(self.creations)}"
        examples = [{"text": self.texts[k], "label": f"{prefix}{'ab'[k % 2]}"} for k in range(4)]
        return {"kind": "classify", "id": task_id, "examples": examples}

    async def call(self, session, method: str, path: str, body=None, auth=False):
        headers = self.headers if auth else {}
        async with session.request(method, self.url + path, json=body, headers=headers) as response:
            self.statuses[response.status] += 1
            return response.status, (await response.json() if response.status != 204 else None)

    async def op(self, session, kind: str, task_id: str, rng: random.Random) -> None:
        text = self.texts[rng.randrange(len(self.texts))]
        if kind == "classify":
            status, reply = await self.call(session, "POST", f"/v1/tasks/{task_id}/classify", {"texts": [text]})
            if status == 200:
                prefixes = {label[:-1] for p in reply["predictions"] for label in p["scores"]}
                if len(prefixes) != 1:
                    self.mixed.append(reply)
        elif kind == "feedback":
            status, info = await self.call(session, "GET", f"/v1/tasks/{task_id}")
            if status == 200:
                body = {"examples": [{"text": text, "label": info["labels"][0]}]}
                status, _ = await self.call(session, "POST", f"/v1/tasks/{task_id}/feedback", body, auth=True)
                if status == 202:
                    self.accepted[task_id, info["labels"][0][:-1]] += 1
        elif kind == "recreate":
            await self.call(session, "DELETE", f"/v1/tasks/{task_id}", auth=True)
            await self.call(session, "POST", "/v1/tasks", self.body(task_id), auth=True)
        else:
            await self.call(session, "GET", f"/v1/tasks/{task_id}")

    async def client(self, session, seed: int, ops: int) -> None:
        rng = random.Random(seed)
        for _ in range(ops):
            await self.op(session, rng.choice(OPS), rng.choice(IDS), rng)

    async def run(self, clients: int, ops: int) -> dict:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for task_id in IDS:
                await self.call(session, "POST", "/v1/tasks", self.body(task_id), auth=True)
            start = time.perf_counter()
            await asyncio.gather(*[self.client(session, seed, ops) for seed in range(clients)])
            seconds = time.perf_counter() - start
            lost = await self.lost_feedback(session)
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        return {"clients": clients, "operations": clients * ops, "seconds": seconds,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "server_errors": server_errors,
                "mixed_answers": len(self.mixed), "feedback_accepted": sum(self.accepted.values()),
                "feedback_lost": lost}  # fmt: skip

    async def lost_feedback(self, session) -> dict:
        """Per task, accepted feedback of its final creation missing from its latest version."""
        lost, deadline = {}, time.time() + 600
        for task_id in IDS:
            while True:
                status, info = await self.call(session, "GET", f"/v1/tasks/{task_id}")
                if status != 200 or not info["pending_feedback"] or time.time() > deadline:
                    break
                await asyncio.sleep(1)
            if status == 200:
                expected = 4 + self.accepted[task_id, info["labels"][0][:-1]]
                lost[task_id] = expected - info["examples"]
        return lost


def store_size(store: Path) -> dict:
    files = [p for p in store.rglob("*") if p.is_file()]
    versions = {t.name: len(list(t.glob("v[0-9]*"))) for t in store.iterdir() if t.is_dir() and t.name in IDS}
    return {"bytes": sum(p.stat().st_size for p in files), "files": len(files), "versions_per_task": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs" / "demo"))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--ops", type=int, default=25)
    parser.add_argument("--keep-versions", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_soak.json"))
    args = parser.parse_args()
    texts = list(DataRegistry(args.data_dir).corpus("banking77").inputs[:500])
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"METARAY_SERVE_TOKEN": "soak"}}
    )
    store = Path(tempfile.mkdtemp(prefix="metaray-serve-soak-"))
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    deployments = [{"name": "Classifier", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}}]
    settings = {"checkpoint": args.checkpoint, "store": str(store), "keep_versions": args.keep_versions}
    serve.run(application(settings, deployments), name="metaray", route_prefix="/")
    try:
        soak = Soak(f"http://127.0.0.1:{args.port}", texts, {"Authorization": "Bearer soak"})
        result = asyncio.run(soak.run(args.clients, args.ops))
        result["store"] = store_size(store)
    finally:
        serve.shutdown()
        ray.shutdown()
    write_result(result, args.out, "python " + shlex.join(["bench/serve_soak.py", *sys.argv[1:]]))
    print(result)


if __name__ == "__main__":
    main()
