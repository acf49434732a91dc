"""Deep prompts (`prompt.depth` > 1). Images: feature-map prompts after the CNN's stages,
rows of θ after the pixels, adapted on a real Omniglot episode with the frozen
EfficientNet-Lite0 left bit-identical. Text: the prompt positions' states replaced
before each of the first layers of MiniLM (P-tuning v2). The depths a backbone cannot
take, and checkpoints of another depth, refused by name."""

import threading

import pytest
import torch
from test_image_backbone import pixels, resnet, saved  # noqa: F401 (resnet: a fixture)
from transformers import ViTConfig, ViTModel

from metaray.checkpoint import save_checkpoint
from metaray.config import ConfigError, ModelConfig, PromptConfig, load_config, to_dict
from metaray.core import InnerConfig
from metaray.data import DataRegistry, TaskSpec
from metaray.distributed import TaskAdapter, train
from metaray.distributed.driver import check_resumable
from metaray.eval import preflight
from metaray.kinds import CLASSIFY, IMAGE, QA, kind_of
from metaray.models.backbone import load_backbone
from metaray.models.encoder import PromptedEncoder
from metaray.models.image_backbone import load_image_backbone
from metaray.models.vision import PromptedVisionEncoder
from metaray.serving.images import encode_image
from metaray.serving.peft_export import ExportError, export_peft
from metaray.serving.store import CorruptTask, TaskVersion
from metaray.serving.tasks import ClassifyRequest, TaskClassifier, check_prompt_shape

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
    with pytest.raises(ConfigError, match="prompt.depth=2 adds prompts inside the backbone.*has no stages metaray can"):
        IMAGE.check_backbone(ModelConfig(backbone=folder), PromptConfig(init="random", depth=2))
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


def test_a_served_image_task_adapts_and_classifies_with_its_checkpoints_deep_prompt(data_dir, tmp_path):
    """Serving builds the model from the checkpoint's own config: the task's φ has the deep
    rows, adaptation moves them, and its answers read them (zeroing the maps changes them)."""
    cfg = omniglot(data_dir, tmp_path, "prompt.depth=3", "meta.rounds=1", "meta.meta_batch_size=1", "ray.local=true")
    train(cfg, progress=False)
    served = TaskClassifier(str(tmp_path / "run"), InnerConfig(steps=2, lr=0.05, views=1), kind=IMAGE.name)
    encoder = served.classifier.encoder
    assert encoder.depth == 3 and served.meta_prompt.shape == (encoder.rows, 84)
    corpus = DataRegistry.from_config(cfg.data).corpus("omniglot/test")
    drawings = [encode_image(p) for p in DataRegistry.from_config(cfg.data).pixels(corpus.inputs[:60:20])]
    labels = [corpus.label_names[corpus.labels[i]] for i in range(0, 60, 20)]
    tensors, _ = served.adapt(drawings, labels)
    moved = tensors["prompt"] - served.meta_prompt
    assert all(m.abs().sum() > 0 for m in encoder.split(moved)[1])
    flat = tensors["prompt"].clone()
    flat[3 * 84 :] = 0
    request = ClassifyRequest("t@1", tensors, tuple(labels), tuple(drawings))
    other = ClassifyRequest("t@2", {**tensors, "prompt": flat}, tuple(labels), tuple(drawings))
    deep, shallow = served.classify([request, other])
    assert [row["scores"] for row in deep] != [row["scores"] for row in shallow]


def test_a_deep_text_prompt_replaces_the_prompt_states_before_each_layer(tmp_path):
    cfg = ModelConfig(max_length=32, prompt_position="first")
    tokenizer, model = load_backbone(cfg)
    shallow, deep = PromptedEncoder(cfg, tokenizer, model), PromptedEncoder(cfg, tokenizer, model, depth=4)
    init = PromptConfig(length=4, init="vocab")
    theta = deep.init_prompt(init)
    assert theta.shape == (4 * 4, 384) and torch.equal(theta[:4], shallow.init_prompt(init))
    # θ₀'s deeper rows are the input prompt's own states before an empty text: there, nothing changes
    torch.testing.assert_close(deep.encode([""], theta), shallow.encode([""], theta[:4]))
    texts = ["I lost my card yesterday", "what is the balance of my account"]
    assert not torch.allclose(deep.encode(texts, theta), shallow.encode(texts, theta[:4]))  # texts attend back
    prompt = theta.clone().requires_grad_(True)
    deep.embed(texts, prompt).sum().backward()
    assert all(part.abs().sum() > 0 for part in prompt.grad.split(4))  # every layer's prompt learns
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(deep.encode(texts, None), shallow.encode(texts, None))  # no hook left behind
    with pytest.raises(ValueError, match=r"depth 4 has depth·P rows, got \(6, 384\)"):
        deep.encode(texts, theta[:6])
    export = TaskVersion("t", 1, {"prompt": theta, "prototypes": torch.eye(2, 384)}, {"labels": ["a", "b"]})
    with pytest.raises(ExportError, match="deep to layer 4 of 6: above it the prompt's states depend on the text"):
        export_peft(export, deep, "x", tmp_path / "adapter")


def test_text_depths_the_encoder_cannot_take_are_refused_before_any_work():
    CLASSIFY.check_backbone(ModelConfig(), PromptConfig(depth=6))
    with pytest.raises(ConfigError, match=r"prompt.depth=7: model.backbone 'all-MiniLM-L6-v2' has 6 layers.*\[1, 6\]"):
        CLASSIFY.check_backbone(ModelConfig(), PromptConfig(depth=7))
    with pytest.raises(ConfigError, match="prompt.depth=2: deep prompts hook the backbone's layers"):
        kind_of(load_config("configs/sharded.yaml", ["prompt.depth=2"]))
    qa = load_config("configs/qa.yaml", ["prompt.depth=31"])
    with pytest.raises(ConfigError, match=r"'SmolLM2-135M-Instruct' has 30 layers.*\[1, 30\]"):
        QA.check_backbone(qa.model, qa.prompt)


def test_a_deep_text_prompt_meta_trains_and_serves_at_its_checkpoints_depth(data_dir, tmp_path):
    run = tmp_path / "run"
    overrides = [f"data.data_dir={data_dir}", f"output.dir={run}", "ray.local=true", "prompt.depth=3"]
    cfg = load_config("configs/tiny.yaml", [*overrides, "meta.rounds=2", "meta.eval_every=0"])
    train(cfg, progress=False)
    served = TaskClassifier(str(run), InnerConfig(steps=2, lr=0.05))
    p = cfg.prompt.length
    assert served.classifier.encoder.depth == 3 and served.meta_prompt.shape == (3 * p, 384)
    texts = ["I lost my card", "my card is gone", "what is my balance", "how much money is left"]
    tensors, _ = served.adapt(texts, ["lost", "lost", "balance", "balance"])
    moved = (tensors["prompt"] - served.meta_prompt).split(p)
    assert all(part.abs().sum() > 0 for part in moved)


def test_a_stored_task_adapted_from_another_depth_is_refused_naming_both_shapes():
    """A server restarted on a checkpoint of another depth would misread the stored task's
    prompt (8 rows read as 2 x 4 by depth 2): the task loader refuses it instead."""
    task = TaskVersion("t", 3, {"prompt": torch.zeros(8, 384)}, {"labels": ["a", "b"]})
    check_prompt_shape(task, torch.zeros(8, 384))
    with pytest.raises(CorruptTask, match=r"'t' version 3: its prompt has shape \(8, 384\).*has \(16, 384\)"):
        check_prompt_shape(task, torch.zeros(16, 384))
    # the same shape read otherwise: a pool of 2 prompts of 3 rows and their keys against a prompt of 8
    single = {"backbone": "all-MiniLM-L6-v2", "length": 8, "depth": 1, "pool_size": 1}
    pooled = {**single, "length": 3, "pool_size": 2, "pool_temperature": 0.1}
    stored = TaskVersion("t", 3, task.tensors, {"labels": ["a", "b"], "metrics": {"read_with": pooled}})
    check_prompt_shape(stored, torch.zeros(8, 384), pooled)
    with pytest.raises(
        CorruptTask, match=r"adapted for a model that reads its prompt with .*'pool_size': 2.*'pool_size': 1"
    ):
        check_prompt_shape(stored, torch.zeros(8, 384), single)


def test_every_pass_of_a_deep_model_waits_for_the_hooks_lock_and_a_shallow_one_has_none():
    """Serving adapts in a thread while it classifies: a pass without a deep prompt must not
    run while another thread's pass has hooks on the shared layers."""
    cfg = ModelConfig(max_length=32)
    tokenizer, model = load_backbone(cfg)
    deep = PromptedEncoder(cfg, tokenizer, model, depth=3)
    assert PromptedEncoder(cfg, tokenizer, model)._hooks is None
    done = threading.Event()
    with deep._hooks:  # as a deep pass of another thread holds it
        worker = threading.Thread(target=lambda: (deep.encode(["a card"], None), done.set()))
        worker.start()
        assert not done.wait(1.0), "a plain pass ran beside a hooked one"
    worker.join(30)
    assert done.is_set()
