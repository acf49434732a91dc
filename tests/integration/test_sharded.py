"""Sharded mode (DeepSpeed ZeRO-3 under Ray Train, 2 workers, gloo on CPU) is the same
algorithm as actor mode: one meta-round gives the same θ, meta-validation the same
accuracy, each rank holds half of the backbone, and the backbone never changes."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import load_config
from metaray.distributed import train
from metaray.distributed.sharded import ShardedRunner

pytestmark = pytest.mark.integration

W = 2


def config(data_dir, out, algorithm, sharded):
    return load_config(
        "configs/tiny.yaml",
        [
            f"data.data_dir={data_dir}",
            f"output.dir={out}",
            f"meta.algorithm={algorithm}",
            "meta.rounds=1",
            "meta.eval_every=1",
            "meta.val_episodes=3",  # not a multiple of W: the last unit is padded
            "output.tensorboard=false",
            f"sharded.enabled={str(sharded).lower()}",
            f"sharded.num_workers={W}",
        ],
    )


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


# FOMAML: its outer step is the query gradient; Reptile's sharded round (θ − φ) is
# test_qa_training's, on the QA kind (each about 50 s: CI's time is kept for one each)
@pytest.fixture(scope="module", params=["fomaml"])
def runs(request, data_dir, tmp_path_factory, ray_local):
    """One round in each mode on the same tasks and seeds; the sharded run's partition
    report and backbone digests before and after."""
    algorithm = request.param
    out = {mode: tmp_path_factory.mktemp(f"{algorithm}-{mode}") for mode in ("actors", "sharded")}
    sharded_cfg = config(data_dir, out["sharded"], algorithm, sharded=True)
    runner = ShardedRunner(sharded_cfg)
    try:
        digest_before = runner.backbone_digests()
        train(sharded_cfg, progress=False, runner=runner)
        sharded = {"partitions": runner.partitions(), "digest_after": runner.backbone_digests()}
    finally:
        runner.shutdown()
    actors_cfg = config(data_dir, out["actors"], algorithm, sharded=False)
    # the actor algorithm, run in this process: test_training shows actors give its θ
    train(dataclasses.replace(actors_cfg, ray=dataclasses.replace(actors_cfg.ray, local=True)), progress=False)
    return {"out": out, "digest_before": digest_before, **sharded}


def theta(out: Path) -> torch.Tensor:
    state, _ = load_checkpoint(str(out), "latest")
    return state["meta_prompt"]


def test_one_sharded_round_equals_the_actor_round(runs):
    sharded, actors = theta(runs["out"]["sharded"]), theta(runs["out"]["actors"])
    torch.testing.assert_close(sharded, actors, atol=1e-5, rtol=0)
    first = metrics(runs["out"]["actors"])
    assert first["round"] == 1 and first["tasks"] == 2
    assert first["pseudo_grad_norm"] > 1e-3, "θ did not move: the comparison would prove nothing"


def test_meta_validation_agrees_across_modes(runs):
    """The same θ, evaluated by the sharded workers and by actors, scores the same."""
    assert metrics(runs["out"]["sharded"])["meta_val_score"] == pytest.approx(
        metrics(runs["out"]["actors"])["meta_val_score"], abs=1e-6
    )


def test_each_rank_holds_one_wth_of_the_backbone(runs):
    parts = runs["partitions"]
    assert len(parts) == W
    total = parts[0]["total"]
    assert total > 20_000_000  # all-MiniLM-L6-v2
    for part in parts:
        # DeepSpeed rounds each tensor's share up: at most one element per tensor over 1/W.
        assert total / W <= part["local"] <= total / W + part["tensors"]
        assert part["whole_now"] == 0, "parameters left gathered after the round"


def test_no_backbone_parameter_changes(runs):
    assert runs["digest_after"] == runs["digest_before"]
