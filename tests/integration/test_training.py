"""Real MiniLM, real data, real local Ray: training moves θ and never the backbone."""

import json
from pathlib import Path

import pytest
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import load_config
from metaray.core import InnerConfig, adapt
from metaray.distributed import LocalRunner, RayRunner, TaskAdapter, preflight, train
from metaray.models import ModelLoadError, PromptedEncoder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    def make(*overrides, config="configs/tiny.yaml"):
        out = tmp_path_factory.mktemp("run")
        return load_config(config, [f"data.data_dir={data_dir}", f"output.dir={out}", *overrides])

    return make


def test_two_actors_on_local_ray_train_checkpoint_and_reload(tiny, ray_local):
    cfg = tiny("meta.algorithm=fomaml")
    runner = RayRunner(cfg)
    try:
        before = runner.backbone_digests()
        summary = train(cfg, progress=False, runner=runner)
        after = runner.backbone_digests()
    finally:
        runner.shutdown()
    assert len(before) == 2 and before == after, "a backbone parameter changed during meta-training"
    state, meta = load_checkpoint(summary["run_dir"])
    assert state["meta_prompt"].shape == (4, 384) and meta["round"] == 2
    init = TaskAdapter(cfg).init_prompt()
    assert not torch.equal(state["meta_prompt"], init), "θ did not move"
    lines = [json.loads(line) for line in (Path(cfg.output.dir) / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2] and "meta_val_score" in lines[-1]


@pytest.mark.parametrize("kind", ["classify", "qa"])
def test_ray_and_local_runners_give_the_same_theta(kind, tiny, tiny_lm_dir, ray_local):
    """Tasks are deterministic from their specs, so where they run must not matter; for
    question answering too (a tiny random causal LM on XQuAD articles)."""
    qa = ["configs/tiny-qa.yaml", f"model.backbone={tiny_lm_dir}"] if kind == "qa" else []
    cfg = tiny("meta.eval_every=0", *qa[1:], config=qa[0] if qa else "configs/tiny.yaml")
    thetas = []
    for runner in (LocalRunner(cfg), RayRunner(cfg)):
        try:
            runner.start(runner.init_prompt())
            runner.round([preflight(cfg).spec(i) for i in range(2)])
            thetas.append(runner.meta_prompt())
        finally:
            runner.shutdown()
    torch.testing.assert_close(thetas[0], thetas[1], rtol=0, atol=1e-6)
    assert not torch.equal(thetas[0], LocalRunner(cfg).init_prompt()), "θ did not move"


def test_prompt_changes_embeddings_and_gets_gradients(tiny):
    encoder = PromptedEncoder(tiny().model)
    prompt = encoder.embedding_table[:4].detach().clone().requires_grad_(True)
    plain = encoder.encode(["what is my balance"], None)
    prompted = encoder.embed(["what is my balance"], prompt)
    assert plain.shape == prompted.shape == (1, 384)
    assert not torch.allclose(plain, prompted)
    prompted.sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.model.parameters())


def test_unloadable_backbone_is_refused_by_name(tiny, tmp_path):
    with pytest.raises(ModelLoadError, match="no-such/model"):
        PromptedEncoder(tiny("model.backbone=no-such/model").model)


def test_the_head_matched_pseudo_gradient_descends_its_query_loss(tiny):
    """meta.algorithm=r2d2 on real MiniLM: g is the gradient at θ of the query loss through
    a ridge head fitted on the support (plus the consistency term), so a small step
    against it lowers that loss on the task, and a step along it raises it; meta-validation
    selects on the head the objective trains for."""
    from metaray.kinds import kind_of

    cfg = tiny("meta.algorithm=r2d2", "meta.consistency=1", "data.ways=[3, 6]")
    adapter = TaskAdapter(cfg)
    theta, spec = adapter.init_prompt(), preflight(cfg).spec(0)
    result = adapter.adapt(theta, spec)
    episode = adapter.episode(spec)

    def loss(prompt):
        with torch.no_grad():
            return float(adapter.prompted.query_loss(prompt, episode, cfg.meta.objective()))

    step = 0.05 * result.pseudo_grad / result.pseudo_grad.norm()
    assert result.query_loss == pytest.approx(loss(theta), rel=1e-5)
    assert loss(theta - step) < loss(theta) < loss(theta + step)
    assert kind_of(cfg).validation_metric(cfg.meta) == "probe"
    # the matched inner loss: leave-one-out through the ridge head; steps on it lower it
    inner = InnerConfig(steps=3, lr=0.05, loss="ridge")
    losses = adapt({"prompt": theta}, adapter.prompted.support_loss_fn(episode, inner, seed=0), inner).losses
    assert losses[-1] < losses[0]
    assert kind_of(tiny()).validation_metric(tiny().meta) == "proto"


def test_text_edits_give_a_one_shot_support_loss_and_widen_the_head_fit(tiny):
    """inner.views with text edits: at one shot, where leave-one-out has nothing to leave
    out, each step scores fresh edited copies of the support against the originals (the
    same copies for the same seed and step), the prompt gets their gradient, and the head
    at test is fitted on the support and its copies."""
    cfg = tiny("data.k_shot=1", "meta.inner.views=2", "meta.inner.augment.token_dropout=0.3")
    adapter = TaskAdapter(cfg)
    theta, inner = adapter.init_prompt(), cfg.meta.inner
    episode = adapter.episode(preflight(cfg).spec(0))
    loss = adapter.prompted.support_loss_fn(episode, inner, seed=3)
    params = {"prompt": theta.clone().requires_grad_(True)}
    assert loss(params, 0).item() == loss(params, 0).item() != loss(params, 1).item()
    loss(params, 0).backward()
    assert params["prompt"].grad.abs().sum() > 0
    fitted, labels = adapter.prompted.fit_set(theta, episode, inner, seed=3)
    plain, plain_labels = adapter.prompted.fit_set(theta, episode, None, seed=3)
    n = len(plain)
    assert fitted.shape == (3 * n, plain.shape[1]) and torch.equal(labels, plain_labels.repeat(3))
    assert torch.allclose(fitted[:n], plain, atol=1e-6) and not torch.allclose(fitted[n:], plain.repeat(2, 1))
    assert torch.equal(fitted, adapter.prompted.fit_set(theta, episode, inner, seed=3)[0])
