"""Question answering runs through the same driver, actors, checkpoints and evaluation as
classification: a tiny random causal LM (so it is fast) on real XQuAD-en articles."""

import json
from pathlib import Path

import pytest
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import ConfigError, load_config
from metaray.data import DataError
from metaray.distributed import RayRunner, preflight, train
from metaray.distributed.sharded import ShardedRunner
from metaray.eval import evaluate, format_table
from metaray.models import ModelLoadError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_qa(data_dir, tiny_lm_dir, tmp_path_factory):
    def make(*overrides):
        out = tmp_path_factory.mktemp("qa-run")
        return load_config(
            "configs/tiny-qa.yaml",
            [f"data.data_dir={data_dir}", f"output.dir={out}", f"model.backbone={tiny_lm_dir}", *overrides],
        )

    return make


def test_qa_meta_training_on_ray_actors_then_evaluation(tiny_qa, ray_local):
    cfg = tiny_qa("meta.algorithm=fomaml", "output.tensorboard=false")
    runner = RayRunner(cfg)  # the causal LM shared read-only through the object store
    try:
        before, init = runner.backbone_digests(), runner.init_prompt()
        train(cfg, progress=False, runner=runner)
        assert runner.backbone_digests() == before, "a backbone parameter changed"
        state, _ = load_checkpoint(cfg.output.dir)
        assert state["meta_prompt"].shape == (4, 32) and not torch.equal(state["meta_prompt"], init)
        rounds = [json.loads(x) for x in (Path(cfg.output.dir) / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rounds] == [1, 2] and 0 <= rounds[-1]["meta_val_score"] <= 100  # answer F1
        ev_cfg = tiny_qa(f"eval.checkpoints={{reptile: {cfg.output.dir}}}")
        result = evaluate(ev_cfg, runner=runner, progress=False)
    finally:
        runner.shutdown()
    methods = result["settings"]["2-shot"]
    assert list(methods) == ["instruction", "random", "reptile"]
    assert set(methods["random"]["heads"]) == {"em", "f1"} and set(methods["random"]["heads"]["f1"]) == {"0", "2"}
    assert set(methods["instruction"]["heads"]["f1"]) == {"0"} and methods["reptile"]["heads"]["f1"]["2"]["n"] == 2
    assert "| instruction | f1 |" in format_table(result)


def test_qa_in_sharded_mode_is_the_same_algorithm(tiny_qa, ray_local):
    """DeepSpeed ZeRO-3 over 2 Ray Train workers: the same θ after a round and the same
    meta-val F1 as the unsharded algorithm (generation decodes a fixed number of steps in
    lockstep), run here in this process: test_training shows actors give its θ."""
    common = ("meta.rounds=1", "meta.eval_every=1", "output.tensorboard=false")
    sharded = tiny_qa(*common, "sharded.enabled=true", "sharded.num_workers=2")
    runner = ShardedRunner(sharded)
    try:
        train(sharded, progress=False, runner=runner)
        assert all(part["whole_now"] == 0 for part in runner.partitions())
    finally:
        runner.shutdown()
    actors = tiny_qa(*common, "ray.local=true")  # the actors' θ equals this process's (test_training)
    train(actors, progress=False)
    states = [load_checkpoint(cfg.output.dir, "latest") for cfg in (sharded, actors)]
    torch.testing.assert_close(states[0][0]["meta_prompt"], states[1][0]["meta_prompt"], atol=1e-5, rtol=0)
    f1 = [meta["metrics"]["meta_val_score"] for _, meta in states]
    assert f1[0] == pytest.approx(f1[1], abs=1e-6)


def test_qa_preflight_refuses_encoders_and_classification_families(tiny_qa):
    with pytest.raises(ModelLoadError, match="BertConfig.*not a causal language model"):
        preflight(tiny_qa("model.backbone=all-MiniLM-L6-v2"))
    with pytest.raises(
        ConfigError, match="'snips' is a classify family, and kind=qa; set kind=classify or pick a qa family"
    ):
        preflight(tiny_qa("data.meta_train=[snips]"))
    with pytest.raises(DataError, match="k_shot=30 leaves it no query"):
        preflight(tiny_qa("data.k_shot=30"))
