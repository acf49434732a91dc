"""Image backbones beyond the packaged EfficientNet: Hugging Face vision models (tiny,
randomly initialised, saved to a folder) under the same visual prompt and adapter."""

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, ResNetConfig, ResNetModel, ViTConfig, ViTModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN

from metaray.config import ModelConfig, PromptConfig, load_config
from metaray.data import TaskSpec
from metaray.distributed import TaskAdapter
from metaray.kinds import IMAGE
from metaray.models import ModelLoadError
from metaray.models.image_backbone import load_image_backbone
from metaray.models.vision import PromptedVisionEncoder

DRAWINGS = {f"a/c{i}/x": np.random.default_rng(i).choice([0, 255], (105, 105)).astype(np.uint8) for i in range(3)}


def pixels(ids):
    return np.stack([DRAWINGS[i] if i in DRAWINGS else np.full((105, 105), 255, np.uint8) for i in ids])  # else: blank


def saved(folder, model, processor: dict | None = None) -> str:
    model.save_pretrained(folder)
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return str(folder)


@pytest.fixture
def resnet(tmp_path):
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    return saved(tmp_path / "resnet", ResNetModel(config), {"image_mean": [0.2, 0.3, 0.4], "image_std": 0.25})


def test_a_hugging_face_cnn_reads_pooled_features_with_its_own_normalisation(resnet):
    _, backbone = load_image_backbone(ModelConfig(backbone=resnet, image_size=24))
    assert backbone.mean == (0.2, 0.3, 0.4) and backbone.std == (0.25, 0.25, 0.25)
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training
    encoder = PromptedVisionEncoder(ModelConfig(image_size=24), backbone, pixels, 3, region="image")
    blank = encoder.images(["a/blank/x"], None)[0]
    assert blank[:, :3].abs().sum() == 0  # the frame is the mean colour
    paper = torch.tensor([(1 - m) / 0.25 for m in (0.2, 0.3, 0.4)]).view(3, 1, 1)  # white, normalised per channel
    assert torch.allclose(blank[:, 3:-3, 3:-3], paper.expand(3, 18, 18), atol=1e-4)
    prompt = encoder.init_prompt(PromptConfig(length=3, init="random")).requires_grad_(True)
    emb = encoder.embed(list(DRAWINGS), prompt)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=1), torch.ones(3))
    emb.sum().backward()
    assert prompt.grad.abs().sum() > 0 and all(p.grad is None for p in backbone.parameters())


def test_a_vision_transformer_reads_its_first_token_at_any_image_size(tmp_path):
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    _, backbone = load_image_backbone(ModelConfig(backbone=saved(tmp_path / "vit", ViTModel(config)), image_size=24))
    assert backbone.mean == tuple(IMAGENET_DEFAULT_MEAN)  # no preprocessor_config.json: ImageNet's statistics
    encoder = PromptedVisionEncoder(ModelConfig(image_size=24), backbone, pixels, 2)  # 24 px: 3 x 3 patches, not 4 x 4
    emb = encoder.encode(list(DRAWINGS), None)
    assert emb.shape == (3, 16) and not torch.allclose(emb[0], emb[1])


def test_a_text_model_or_a_missing_folder_is_refused_by_name(tmp_path):
    bert = saved(tmp_path / "bert", BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2)))
    with pytest.raises(ModelLoadError, match="'bert' model, not a vision model"):
        IMAGE.check_backbone(ModelConfig(backbone=bert))
    with pytest.raises(ModelLoadError, match="(?s)no-such-vision-model.*valid backbones: efficientnet-lite0"):
        IMAGE.check_backbone(ModelConfig(backbone="no-such-vision-model"))


def test_the_adapter_adapts_a_prompt_for_a_hugging_face_backbone_on_omniglot(data_dir, resnet, tmp_path):
    cfg = load_config(
        "configs/omniglot.yaml",
        [f"data.data_dir={data_dir}", f"model.backbone={resnet}", "model.image_size=28", "prompt.length=2"]
        + ["meta.inner.steps=2", f"output.dir={tmp_path / 'run'}"],
    )
    adapter = TaskAdapter(cfg)
    before, theta = adapter.backbone_digest(), adapter.init_prompt()
    assert theta.shape == (3 * 28, 28)
    spec = TaskSpec("omniglot/test", 0, 5, 1, 2, 0)
    assert adapter.adapt(theta, spec).pseudo_grad.abs().sum() > 0
    scores = adapter.evaluate(theta, spec, (0, 2), cfg.eval.inner).scores
    assert set(scores) == {0, 2} and all(0 <= s["proto"] <= 100 for s in scores.values())
    assert adapter.backbone_digest() == before
