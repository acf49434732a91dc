"""bench/qa_speed: what a support step and an article's answers cost, per `model.compute_dtype`.

    python bench/qa_speed.py data.data_dir=../shared/data

The frozen SmolLM2-135M-Instruct of configs/qa.yaml on one thread (as each actor has),
the first meta-val article (4 support questions, all its others as queries), the
prompt's text init. For fp32 and bf16: the seconds of one support step (the answer loss
on 2 questions, forward and backward into the prompt; median of 3) and of the greedy
answers to every query in one batch (median of 3; each distinct context read once), and
how many of those answers differ from fp32's. Writes bench/results/qa_speed.json on a CPU
with bfloat16 instructions (AVX512-BF16, AMX), qa_speed-no-native-bf16.json on one without.
"""

from __future__ import annotations

import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from metaray.config import DTYPES, load_config
from metaray.data import DataRegistry
from metaray.data.squad import qa_episode
from metaray.eval import write_result
from metaray.kinds import QA
from metaray.models import native_bf16

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "qa.yaml"
REPEATS = 3


def median_seconds(work) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    overrides = sys.argv[1:]
    cfg = load_config(CONFIG, overrides)
    tokenizer, model = QA.load_backbone(cfg.model)
    support, query = qa_episode(DataRegistry.from_config(cfg.data).load(cfg.data.meta_val)[0], cfg.data.k_shot, 0, 0)
    out: dict = {"questions": len(query), "distinct_contexts": len({q.context for q in query}), "dtypes": {}}
    answers: dict[str, list[str]] = {}
    for dtype in DTYPES:
        qa = QA.prompted_model(load_config(CONFIG, [*overrides, f"model.compute_dtype={dtype}"]), tokenizer, model)
        prompt = qa.init_prompt(cfg.prompt)
        leaf = prompt.clone().requires_grad_(True)

        def step(lm=qa.lm, leaf=leaf) -> None:
            lm.loss(leaf, list(support[:2])).backward()

        def generate(lm=qa.lm, prompt=prompt, dtype=dtype) -> None:
            answers[dtype] = lm.generate(prompt, list(query))

        row = {"support_step_s": median_seconds(step), "generate_s": median_seconds(generate)}
        row["answers_unlike_fp32"] = sum(a != b for a, b in zip(answers[dtype], answers["fp32"], strict=True))
        out["dtypes"][dtype] = row
        print(f"[qa_speed] {dtype}: {row}", flush=True)
    native = native_bf16(torch.device("cpu"))
    out["native_bf16"] = native  # what model.compute_dtype=auto takes here: bf16 if so, else fp32
    name = "qa_speed.json" if native else "qa_speed-no-native-bf16.json"  # a CPU of each kind keeps its file
    write_result(out, ROOT / "bench" / "results" / name, "python " + shlex.join(sys.argv))


if __name__ == "__main__":
    main()
