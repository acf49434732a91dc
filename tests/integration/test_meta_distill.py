"""Distillation in meta-training (`meta.distill`), with real encoders: the teacher's labels
of a task's queries enter the student's losses as the distillation term, and meta-training
on local Ray moves θ toward the teacher's soft labels."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from metaray.config import ConfigError, load_config
from metaray.core import cosine_logits, prototypes
from metaray.core.distill import Lesson
from metaray.distributed import LocalRunner, RayRunner, TaskAdapter, preflight
from metaray.kinds import kind_of

pytestmark = pytest.mark.integration

# the teacher is the student's own backbone read without a prompt (no download in CI)
TAUGHT = ["distill.teacher=all-MiniLM-L6-v2", "distill.temperature=2", "meta.eval_every=0", "prompt.init=random"]


def _config(data_dir, tmp_path, *overrides):
    return load_config("configs/tiny.yaml", [f"data.data_dir={data_dir}", f"output.dir={tmp_path}", *overrides])


def _taught(adapter: TaskAdapter, spec, weight: float):
    """The task's episode with its queries as the unlabeled inputs, and the teacher's lesson."""
    episode = adapter.episode(spec)
    episode = dataclasses.replace(episode, unlabeled_inputs=episode.query_inputs)
    distill = dataclasses.replace(adapter.cfg.distill, weight=weight)
    return episode, Lesson(distill, adapter.teacher.label(episode).logits)


def _distance_to_teacher(adapter: TaskAdapter, theta: torch.Tensor, specs) -> float:
    """The mean over tasks of T² · CE(teacher's soft labels, student's) on the queries at θ."""
    total = 0.0
    with torch.no_grad():
        for spec in specs:
            episode, lesson = _taught(adapter, spec, weight=1.0)
            plain = adapter.prompted.query_loss(theta, episode)
            total += float(adapter.prompted.query_loss(theta, episode, lesson=lesson) - plain)
    return total / len(specs)


def test_the_lesson_adds_the_teachers_soft_labels_of_the_queries_to_both_losses(data_dir, tmp_path):
    cfg = _config(data_dir, tmp_path, *TAUGHT, "meta.distill=3")
    adapter = TaskAdapter(cfg)
    spec = preflight(cfg).spec(0)
    episode, lesson = _taught(adapter, spec, weight=3.0)
    theta = adapter.init_prompt()
    encoder, scale, n_support = adapter.prompted.encoder, cfg.model.scale, len(episode.support_inputs)
    # the student's logits on the queries, against the support's prototypes, computed here
    support, query = encoder.embed(episode.support_inputs, theta), encoder.embed(episode.query_inputs, theta)
    logits = cosine_logits(query, prototypes(support, torch.from_numpy(episode.support_labels), 3), scale)
    soft = F.softmax(adapter.teacher.label(episode).logits[n_support:] / 2.0, -1)
    term = 3.0 * 4.0 * F.cross_entropy(logits / 2.0, soft)
    with torch.no_grad():
        loss = adapter.prompted.support_loss_fn(episode, cfg.meta.inner, seed=0)
        taught = adapter.prompted.support_loss_fn(episode, cfg.meta.inner, seed=0, lesson=lesson)
        # tiny's inner mini-episode is every class and every example, so the prototypes are these
        torch.testing.assert_close(taught({"prompt": theta}, 0), loss({"prompt": theta}, 0) + term)
        plain = adapter.prompted.query_loss(theta, episode)
        torch.testing.assert_close(adapter.prompted.query_loss(theta, episode, lesson=lesson), plain + term)
    assert float(term) > 0


def test_meta_distillation_on_local_ray_moves_theta_toward_the_teacher(data_dir, tmp_path, ray_local):
    """Three FOMAML rounds with and without the teacher's term, from the same θ₀ and tasks:
    the distilled θ's predictions on the training tasks' queries are the closer to the
    teacher's, and the backbone never changes."""
    thetas, runs = {}, (("taught", "meta.distill=5", RayRunner), ("plain", "meta.distill=0", LocalRunner))
    for name, weight, make_runner in runs:
        cfg = _config(data_dir, tmp_path / name, *TAUGHT, weight, "meta.algorithm=fomaml", "meta.rounds=3")
        runner = make_runner(cfg)
        try:
            runner.start(runner.init_prompt())
            specs = [preflight(cfg).spec(i) for i in range(6)]
            for start in range(0, 6, 2):
                runner.round(specs[start : start + 2])
            thetas[name] = runner.meta_prompt()
        finally:
            runner.shutdown()
    adapter = TaskAdapter(cfg)
    before = _distance_to_teacher(adapter, adapter.init_prompt(), specs)
    after = {name: _distance_to_teacher(adapter, theta, specs) for name, theta in thetas.items()}
    assert after["taught"] < before and after["taught"] < after["plain"], (before, after)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["meta.distill=1"], "meta.distill=1.0 weighs a teacher's soft labels in meta-training, but distill.teacher"),
        (["meta.distill=-1"], r"meta.distill must be >= 0"),
        (["meta.distill=1", "distill.teacher=all-MiniLM-L6-v2", "sharded.enabled=true"], "not in sharded mode"),
    ],
)
def test_meta_distillation_needs_a_teacher_and_actors(data_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg = _config(data_dir, tmp_path, *overrides)
        kind_of(cfg).check_config(cfg)
