"""Prompts generated per input (`prompt.pool_size` > 1): each text reads the mix of a pool of
prompts weighted by its frozen embedding's similarity to their keys; pool and keys learn,
the backbone does not; the settings a pool cannot take, and checkpoints of another pool
size, refused by name."""

import pytest
import torch

from metaray.checkpoint import save_checkpoint
from metaray.config import ConfigError, ModelConfig, PromptConfig, load_config, to_dict
from metaray.core import InnerConfig
from metaray.data import TaskSpec
from metaray.distributed import TaskAdapter, train
from metaray.distributed.driver import check_resumable
from metaray.distributed.runners import make_runner
from metaray.eval import evaluate, preflight
from metaray.kinds import kind_of
from metaray.models.backbone import load_backbone
from metaray.models.encoder import PromptedEncoder
from metaray.models.prompt_pool import mixed_prompts, pool_weights, split_pool
from metaray.serving.peft_export import ExportError, export_peft
from metaray.serving.store import TaskVersion
from metaray.serving.tasks import ClassifyRequest, TaskClassifier

TEXTS = ["I lost my card yesterday", "what is the balance of my account", "book a table for two tonight"]


@pytest.fixture(scope="module")
def encoders():
    cfg = ModelConfig(max_length=32)
    tokenizer, model = load_backbone(cfg)
    return PromptedEncoder(cfg, tokenizer, model), PromptedEncoder(cfg, tokenizer, model, pool_size=3), model


def test_each_text_reads_its_own_mix_of_the_pool(encoders):
    single, pooled, _ = encoders
    theta = pooled.init_prompt(PromptConfig(length=4, init="vocab"))
    assert theta.shape == (3 * 4 + 3, 384)
    pool, keys = split_pool(theta, 3)
    assert torch.equal(pool[0], single.init_prompt(PromptConfig(length=4, init="vocab")))  # prompt 0: the usual θ₀
    assert not torch.equal(pool[0], pool[1]) and torch.allclose(keys.norm(dim=-1), torch.ones(3))
    queries = single.encode(TEXTS, None)
    weights = pool_weights(queries, keys, 0.1)
    assert torch.allclose(weights.sum(-1), torch.ones(3)) and not torch.allclose(weights[0], weights[1])
    for i, text in enumerate(TEXTS):  # the pooled embedding is the single prompt's under the text's own mix
        own = (weights[i, :, None, None] * pool).sum(0)
        torch.testing.assert_close(pooled.encode([text], theta), single.encode([text], own), atol=1e-5, rtol=1e-4)
    same = torch.cat([pool[0]] * 3 + [keys])  # a pool of one prompt thrice: that prompt, whatever the keys
    torch.testing.assert_close(pooled.encode(TEXTS, same), single.encode(TEXTS, pool[0]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled.encode(TEXTS, None), single.encode(TEXTS, None))


def test_the_prompts_and_the_keys_learn_and_the_backbone_does_not(encoders):
    _, pooled, model = encoders
    theta = pooled.init_prompt(PromptConfig(length=4, init="vocab")).requires_grad_(True)
    pooled.embed(TEXTS, theta)[:, 0].sum().backward()
    pool_grad, key_grad = split_pool(theta.grad, 3)
    assert all(g.abs().sum() > 0 for g in pool_grad) and all(g.abs().sum() > 0 for g in key_grad)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match=r"pool of 3 prompts has 3·\(P \+ 1\) rows.*got \(14, 384\)"):
        pooled.encode(TEXTS, theta.detach()[:14])
    mixed = mixed_prompts(theta.detach(), 3, pooled.frozen_embeddings(TEXTS), 1e-3)  # a cold softmax picks one
    assert all(any(torch.allclose(m, p, atol=1e-4) for p in split_pool(theta.detach(), 3)[0]) for m in mixed)


def test_a_pool_adapts_on_a_real_episode_and_the_backbone_stays_bit_identical(data_dir, tmp_path):
    cfg = load_config(
        "configs/tiny.yaml", [f"data.data_dir={data_dir}", f"output.dir={tmp_path}", "prompt.pool_size=4"]
    )
    adapter = TaskAdapter(cfg)
    before, theta = adapter.backbone_digest(), adapter.init_prompt()
    assert theta.shape == (4 * 4 + 4, 384)
    g = adapter.adapt(theta, TaskSpec("clinc150/train", 0, 3, 2, 2, 0)).pseudo_grad
    pool_grad, key_grad = split_pool(g, 4)
    assert all(p.abs().sum() > 0 for p in pool_grad) and key_grad.abs().sum() > 0
    assert adapter.backbone_digest() == before


def test_settings_a_pool_cannot_take_are_refused_by_name():
    with pytest.raises(ConfigError, match="prompt.pool_size must be >= 1"):
        PromptConfig(pool_size=0)
    with pytest.raises(ConfigError, match="prompt.pool_temperature must be > 0"):
        PromptConfig(pool_temperature=0)
    with pytest.raises(ConfigError, match="prompt.pool_size=4 mixes input prompts per text, and prompt.depth=2"):
        kind_of(load_config("configs/tiny.yaml", ["prompt.pool_size=4", "prompt.depth=2"]))
    with pytest.raises(
        ConfigError, match="prompt.pool_size=4: prompts per input are built for kind=classify.*kind=image"
    ):
        kind_of(load_config("configs/omniglot.yaml", ["prompt.pool_size=4"]))
    with pytest.raises(ConfigError, match="prompt.pool_size=4: prompts per input are built for kind=classify.*kind=qa"):
        kind_of(load_config("configs/qa.yaml", ["prompt.pool_size=4"]))
    with pytest.raises(ConfigError, match="prompt.pool_size=2: a pool weighs its prompts by a second, unprompted pass"):
        kind_of(load_config("configs/sharded.yaml", ["prompt.pool_size=2"]))


def test_a_checkpoint_of_another_pool_size_is_refused_by_eval_resume_warm_start_and_export(
    data_dir, tmp_path, encoders
):
    pooled_cfg = load_config("configs/tiny.yaml", [f"data.data_dir={data_dir}", "prompt.pool_size=3"])
    theta = torch.zeros(15, 384)
    state = {"round": 1, "meta_prompt": theta, "optimizer": {"state": {}, "param_groups": []}}
    save_checkpoint(tmp_path / "pooled", state, {"config": to_dict(pooled_cfg)})
    single = load_config(
        "configs/tiny.yaml",
        [f"data.data_dir={data_dir}", f"eval.checkpoints.reptile={tmp_path / 'pooled'}", "eval.methods=[reptile]"],
    )
    with pytest.raises(
        ConfigError, match=r"\(15, 384\), was meta-trained with prompt.pool_size=3.*has prompt.pool_size=1"
    ):
        preflight(single)
    colder = [f"eval.checkpoints.reptile={tmp_path / 'pooled'}", "eval.methods=[reptile]", "prompt.pool_size=3"]
    colder = load_config("configs/tiny.yaml", [f"data.data_dir={data_dir}", *colder, "prompt.pool_temperature=0.05"])
    with pytest.raises(
        ConfigError, match=r"prompt.pool_temperature=0.1, and this config has prompt.pool_temperature=0.05"
    ):
        preflight(colder)
    with pytest.raises(ConfigError, match="prompt.pool_size: checkpoint 3, now 1"):
        check_resumable(single, to_dict(pooled_cfg))
    warm = [f"data.data_dir={data_dir}", f"output.dir={tmp_path / 'b'}", "ray.local=true"]
    with pytest.raises(ConfigError, match=r"prompt.warm_start=.*prompt.pool_size=3.*has prompt.pool_size=1"):
        train(load_config("configs/tiny.yaml", [*warm, f"prompt.warm_start={tmp_path / 'pooled'}"]), progress=False)
    task = TaskVersion("t", 1, {"prompt": theta, "prototypes": torch.eye(2, 384)}, {"labels": ["a", "b"]})
    with pytest.raises(ExportError, match="a pool of 3 prompts mixed per text"):
        export_peft(task, encoders[1], "x", tmp_path / "adapter")


def test_a_served_task_adapts_and_answers_with_its_checkpoints_pool(data_dir, tmp_path):
    """Serving builds the model from the checkpoint's config: the task's φ is a pool whose
    keys adaptation moves, and each text's answer reads its own mix (a pool of equal
    prompts answers otherwise)."""
    overrides = ["prompt.pool_size=3", "meta.rounds=1", "meta.meta_batch_size=1", "ray.local=true"]
    cfg = load_config("configs/tiny.yaml", [f"data.data_dir={data_dir}", f"output.dir={tmp_path / 'run'}", *overrides])
    train(cfg, progress=False)
    served = TaskClassifier(str(tmp_path / "run"), InnerConfig(steps=2, lr=0.05, batch_ways=2))
    assert served.classifier.encoder.pool_size == 3 and served.meta_prompt.shape == (3 * 4 + 3, 384)
    labels = ["card", "card", "balance", "balance"]
    texts = ["I lost my card", "my card was stolen", "what is my balance", "how much money do I have"]
    tensors, metrics = served.adapt(texts, labels)
    assert metrics["read_with"] == {
        "backbone": "all-MiniLM-L6-v2",
        "length": 4,
        "depth": 1,
        "pool_size": 3,
        "pool_temperature": 0.1,
    }
    assert split_pool(tensors["prompt"] - served.meta_prompt, 3)[1].abs().sum() > 0  # the keys moved
    pool, keys = split_pool(tensors["prompt"], 3)
    equal = torch.cat([pool[0]] * 3 + [keys])
    asked = ("where is my card", "show my balance")
    request = ClassifyRequest("t@1", tensors, ("card", "balance"), asked)
    other = ClassifyRequest("t@2", {**tensors, "prompt": equal}, ("card", "balance"), asked)
    mixed, single = served.classify([request, other])
    assert [row["scores"] for row in mixed] != [row["scores"] for row in single]


def test_evaluate_refuses_actors_built_for_another_prompt_shape(data_dir):
    """A runner's actors read θ with the model they were built with: a pool or deep θ on a
    single-prompt model would be scored as one long prompt, so evaluate refuses it."""
    common = [f"data.data_dir={data_dir}", "ray.local=true", "eval.methods=[linear_probe]", "eval.episodes=1"]
    runner = make_runner(load_config("configs/tiny.yaml", common))
    try:
        for key, value in (("prompt.pool_size", 3), ("prompt.depth", 2)):
            other = load_config("configs/tiny.yaml", [*common, f"{key}={value}"])
            with pytest.raises(ConfigError, match=f"actors were built with {key}=1, and this config has {key}={value}"):
                evaluate(other, runner, progress=False)
        assert evaluate(load_config("configs/tiny.yaml", common), runner, progress=False)["settings"]
    finally:
        runner.shutdown()
