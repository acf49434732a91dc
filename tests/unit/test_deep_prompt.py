"""A deep visual prompt (`prompt.depth` > 1): feature-map prompts after the CNN's stages,
rows of θ after the pixels; adapted on a real Omniglot episode with the frozen
EfficientNet-Lite0 left bit-identical; the depths a backbone cannot take refused by name."""

import pytest
import torch
from test_image_backbone import pixels, resnet, saved  # noqa: F401 (resnet: a fixture)
from transformers import ViTConfig, ViTModel

from metaray.checkpoint import save_checkpoint
from metaray.config import ConfigError, ModelConfig, PromptConfig, load_config, to_dict
from metaray.data import TaskSpec
from metaray.distributed import TaskAdapter
from metaray.distributed.driver import check_resumable
from metaray.eval import preflight
from metaray.kinds import IMAGE, kind_of
from metaray.models.image_backbone import load_image_backbone
from metaray.models.vision import PromptedVisionEncoder

EFFICIENTNET_MAPS = [(16, 42, 42), (24, 21, 21), (40, 10, 10), (80, 5, 5), (112, 5, 5), (192, 2, 2), (320, 2, 2)]


def omniglot(data_dir, tmp_path, *overrides):
    return load_config(
        "configs/omniglot.yaml",
        [f"data.data_dir={data_dir}", f"output.dir={tmp_path / 'run'}", "meta.inner.steps=2", *overrides],
    )


def test_a_deep_prompt_adapts_on_a_real_episode_and_the_backbone_stays_bit_identical(data_dir, tmp_path):
    adapter = TaskAdapter(omniglot(data_dir, tmp_path, "prompt.depth=8"))
    encoder = adapter.prompted.encoder
    assert [tuple(s) for s in encoder.map_shapes] == EFFICIENTNET_MAPS  # every stage of EfficientNet-Lite0
    before, theta = adapter.backbone_digest(), adapter.init_prompt()
    size, cells = 84, sum(c * h * w for c, h, w in EFFICIENTNET_MAPS)
    assert theta.shape == (3 * size + -(-cells // size), size) and theta[3 * size :].abs().sum() == 0
    spec = TaskSpec("omniglot/test", 0, 5, 1, 2, 0)
    g = adapter.adapt(theta, spec).pseudo_grad
    pixel_grad, maps = encoder.split(g)
    assert pixel_grad.abs().sum() > 0 and all(m.abs().sum() > 0 for m in maps)  # every stage's map moved
    assert g[3 * size :].view(-1)[cells:].abs().sum() == 0  # the padding never does
    assert adapter.backbone_digest() == before


def test_a_zero_deep_prompt_embeds_as_the_pixel_prompt_alone_and_its_maps_shift_the_features(resnet):  # noqa: F811
    _, backbone = load_image_backbone(ModelConfig(backbone=resnet, image_size=24))
    shallow = PromptedVisionEncoder(ModelConfig(image_size=24), backbone, pixels, 3, region="image")
    deep = PromptedVisionEncoder(ModelConfig(backbone=resnet, image_size=24), backbone, pixels, 3, "image", depth=3)
    assert [tuple(s) for s in deep.map_shapes] == [(8, 6, 6), (16, 3, 3)]  # the two stages' outputs
    theta = deep.init_prompt(PromptConfig(length=3, init="random"))
    ids = ["a/c0/x", "a/c1/x"]
    torch.testing.assert_close(deep.encode(ids, theta), shallow.encode(ids, theta[: 3 * 24]))
    moved = theta.clone()
    moved[3 * 24 :] = 0.5
    assert not torch.allclose(deep.encode(ids, moved), deep.encode(ids, theta))
    torch.testing.assert_close(deep.encode(ids, None), shallow.encode(ids, None))  # no prompt, no hooks left behind
    with pytest.raises(ValueError, match=r"prompt.depth=3.*\(90, 24\), got \(72, 24\)"):
        deep.encode(ids, theta[: 3 * 24])


def test_depths_a_backbone_cannot_take_are_refused_by_name_before_any_work(resnet, tmp_path):  # noqa: F811
    with pytest.raises(
        ConfigError, match=r"prompt.depth=9: model.backbone 'efficientnet-lite0' has 7 stages.*\[1, 8\]"
    ):
        IMAGE.check_backbone(ModelConfig(backbone="efficientnet-lite0"), PromptConfig(init="random", depth=9))
    with pytest.raises(ConfigError, match=r"has 2 stages, so prompt.depth must be in \[1, 3\]"):
        IMAGE.check_backbone(ModelConfig(backbone=resnet), PromptConfig(init="random", depth=4))
    vit = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    folder = saved(tmp_path / "vit", ViTModel(vit))
    IMAGE.check_backbone(ModelConfig(backbone=folder), PromptConfig(init="random", depth=1))
    with pytest.raises(ConfigError, match="prompt.depth=2 adds prompts.*has no stages metaray can find"):
        IMAGE.check_backbone(ModelConfig(backbone=folder), PromptConfig(init="random", depth=2))
    with pytest.raises(ConfigError, match="prompt.depth=2: deep prompts are built for visual prompts"):
        kind_of(load_config("configs/tiny.yaml", ["prompt.depth=2"]))
    with pytest.raises(ConfigError, match="prompt.depth must be >= 1"):
        PromptConfig(depth=0)


def test_a_checkpoint_of_another_depth_is_refused_by_eval_and_resume_naming_both(data_dir, tmp_path):
    deep = omniglot(data_dir, tmp_path, "prompt.depth=8")
    theta = torch.zeros(844, 84)
    state = {"round": 1, "meta_prompt": theta, "optimizer": {"state": {}, "param_groups": []}}
    save_checkpoint(tmp_path / "deep", state, {"config": to_dict(deep)})
    shallow = omniglot(data_dir, tmp_path, f"eval.checkpoints.reptile={tmp_path / 'deep'}", "eval.methods=[reptile]")
    with pytest.raises(ConfigError, match=r"\(844, 84\), was meta-trained with prompt.depth=8.*has prompt.depth=1"):
        preflight(shallow)
    with pytest.raises(ConfigError, match="prompt.depth: checkpoint 8, now 1"):
        check_resumable(shallow, to_dict(deep))
