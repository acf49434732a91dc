"""The real EfficientNet-Lite0 (ImageNet weights, offline) adapts a visual prompt on
Omniglot episodes through the same adapter, driver and evaluation as the other kinds."""

import pytest
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import load_config
from metaray.data import TaskSpec
from metaray.distributed import TaskAdapter, train
from metaray.eval import evaluate

pytestmark = pytest.mark.integration


SMALL = ["ray.local=true", "meta.rounds=1", "meta.meta_batch_size=2", "meta.eval_every=1", "meta.val_episodes=2"]
SMALL += ["eval.episodes=2", "eval.steps=[0,2]", "eval.inner.steps=2", "output.tensorboard=false"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("omniglot")


@pytest.fixture(scope="module")
def cfg(data_dir, out):
    def make(*overrides):
        return load_config(
            "configs/omniglot.yaml", [f"data.data_dir={data_dir}", f"output.dir={out}", *SMALL, *overrides]
        )

    return make


@pytest.mark.parametrize("region", ["frame", "image"])
def test_a_visual_prompt_adapts_on_one_episode_and_the_backbone_never_changes(cfg, region):
    adapter = TaskAdapter(cfg(f"prompt.region={region}"))
    before, theta = adapter.backbone_digest(), adapter.init_prompt()
    spec = TaskSpec("omniglot/test", 0, 5, 1, 5, 0)
    result = adapter.adapt(theta, spec)
    frame = torch.zeros(3, 84, 84, dtype=torch.bool)
    frame[:, :4], frame[:, -4:], frame[:, :, :4], frame[:, :, -4:] = True, True, True, True
    update = result.pseudo_grad.view(3, 84, 84)
    assert update[frame].abs().sum() > 0  # Reptile's θ − φ
    assert (update[~frame].abs().sum() > 0) == (region == "image")  # the drawing's pixels move only for "image"
    scores = adapter.evaluate(theta, spec, (0, 4), cfg().eval.inner).scores
    assert set(scores) == {0, 4} and all(0 <= s["proto"] <= 100 for s in scores.values())
    assert adapter.evaluate(None, spec, (0,), cfg().eval.inner).scores[0]["proto"] > 20  # 5-way chance
    assert adapter.backbone_digest() == before


def test_image_meta_training_and_evaluation(cfg, out):
    train(cfg(), progress=False)
    state, _ = load_checkpoint(str(out), "latest")
    assert state["meta_prompt"].shape == (3 * 84, 84)
    ev = cfg("eval.methods=[protonet,finetune,random,reptile]", f"eval.checkpoints={{reptile: {out}}}")
    methods = evaluate(ev, progress=False)["settings"]["5-way 1-shot"]
    assert list(methods) == ["protonet", "finetune", "random", "reptile"]
    assert methods["reptile"]["heads"]["proto"]["2"]["n"] == 2 and set(methods["finetune"]["heads"]) == {
        "proto",
        "probe",
    }


def test_finetuning_moves_a_copy_of_the_backbone_and_its_new_layer_learns(cfg):
    adapter = TaskAdapter(cfg())
    before = adapter.backbone_digest()
    spec = TaskSpec("omniglot/test", 1, 5, 1, 5, 0)
    scores = adapter.evaluate("finetune", spec, (0, 3), cfg().eval.inner).scores
    assert scores[0]["probe"] == 20.0  # a zero layer: every query gets class 0, one class in five
    assert scores[3]["probe"] > 20.0 and adapter.backbone_digest() == before
