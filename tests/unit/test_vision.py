"""Images: the Omniglot loader and split, and the visual prompt on a tiny CNN."""

import numpy as np
import pytest
import torch

from metaray.config import ModelConfig, PromptConfig, load_config
from metaray.data import DataError, DataRegistry
from metaray.models.image_backbone import ImageBackbone
from metaray.models.vision import PromptedVisionEncoder, warp


def test_omniglot_has_8_alphabets_242_characters_split_by_alphabet(data_dir):
    src = DataRegistry.from_config(load_config("configs/omniglot.yaml", [f"data.data_dir={data_dir}"]).data)
    corpora = {split: src.corpus(f"omniglot/{split}") for split in ("train", "val", "test")}
    assert sum(len(c.label_names) for c in corpora.values()) == 242  # Greek and Latin read once
    assert sum(len(c.inputs) for c in corpora.values()) == 242 * 20
    alphabets = {s: {n.split("/")[0] for n in c.label_names} for s, c in corpora.items()}
    assert alphabets["test"] == {"Korean", "Sanskrit", "Tagalog"} and alphabets["val"] == {"Early_Aramaic"}
    assert len(alphabets["train"]) == 4 and not alphabets["train"] & (alphabets["test"] | alphabets["val"])
    assert all(np.bincount(c.labels).tolist() == [20] * len(c.label_names) for c in corpora.values())
    pixels = src.pixels(corpora["test"].inputs[:3])
    assert pixels.shape == (3, 105, 105) and pixels.dtype == np.uint8 and set(np.unique(pixels)) == {0, 255}


def test_rotations_make_new_meta_train_classes_only(data_dir):
    def sources(*overrides):
        return DataRegistry.from_config(
            load_config("configs/omniglot.yaml", [f"data.data_dir={data_dir}", *overrides]).data
        )

    src = sources("data.sources.omniglot.rotations=true")
    train, test = src.corpus("omniglot/train"), src.corpus("omniglot/test")
    plain = sources().corpus("omniglot/train")
    assert len(train.label_names) == 4 * len(plain.label_names) and len(train.inputs) == 4 * len(plain.inputs)
    assert np.bincount(train.labels).tolist() == [20] * len(train.label_names)
    assert not any("@" in name for name in test.label_names)
    turned = f"{plain.inputs[0]}@90"
    assert train.label_names[train.labels[train.inputs.index(turned)]] == f"{plain.label_names[plain.labels[0]]}@90"
    original, rotated = src.pixels([plain.inputs[0], turned])
    assert np.array_equal(rotated, np.rot90(original)) and not np.array_equal(rotated, original)
    with pytest.raises(DataError, match="@45"):
        src.pixels([f"{plain.inputs[0]}@45"])


def test_the_full_background_set_splits_by_alphabet(data_dir):
    """30 alphabets, 964 characters; an alphabet the zip does not have is refused with the valid names."""
    split = {"val_alphabets": ["Armenian", "Bengali"], "test_alphabets": ["Korean", "Sanskrit", "Tagalog", "N_Ko"]}
    src = DataRegistry(data_dir, {"omniglot": {"archive": "background", **split}})
    corpora = {split: src.corpus(f"omniglot/{split}") for split in ("train", "val", "test")}
    assert sum(len(c.label_names) for c in corpora.values()) == 964
    assert len({n.split("/")[0] for n in corpora["train"].label_names}) == 24
    small = DataRegistry(data_dir).corpus("omniglot/test")
    ids = [i for i in small.inputs[:40:7]]  # the small sets' drawings are in the full set, pixel for pixel
    assert np.array_equal(src.pixels(ids), DataRegistry(data_dir).pixels(ids))
    with pytest.raises(DataError, match="unknown name.*Atlantean.*Omniglot.*valid: .*Tifinagh"):
        DataRegistry(data_dir, {"omniglot": {"archive": "background", "val_alphabets": ["Atlantean"]}}).corpus(
            "omniglot/val"
        )


class TinyCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=2)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    drawings = {f"a/c{i}/x": np.random.default_rng(i).choice([0, 255], (105, 105)).astype(np.uint8) for i in range(4)}
    model = ImageBackbone(TinyCNN(), "extract_features").eval().requires_grad_(False)
    return PromptedVisionEncoder(ModelConfig(image_size=24), model, lambda ids: np.stack([drawings[i] for i in ids]), 3)


def test_the_prompt_is_a_frame_and_only_the_frame_learns(encoder):
    theta = encoder.init_prompt(PromptConfig(length=3, init="random"))
    assert theta.shape == (3 * 24, 24)
    canvas = theta.view(3, 24, 24)
    assert canvas[:, 3:-3, 3:-3].abs().sum() == 0 and canvas[:, :3].abs().sum() > 0
    prompt = theta.clone().requires_grad_(True)
    encoder.embed(["a/c0/x", "a/c1/x"], prompt).sum().backward()
    grad = prompt.grad.view(3, 24, 24)
    assert grad[:, 3:-3, 3:-3].abs().sum() == 0 and grad[:, :3].abs().sum() > 0
    assert all(p.grad is None for p in encoder.model.parameters())


def test_without_a_prompt_the_frame_is_grey_and_the_drawing_inside(encoder):
    plain = encoder.images(["a/c2/x"], None)[0]
    assert plain.shape == (3, 24, 24) and plain[:, :3].abs().sum() == 0  # 0 is mid-grey in [-1, 1]
    assert plain[:, 3:-3, 3:-3].min() >= -1 and plain[:, 3:-3, 3:-3].max() <= 1 and plain[:, 3:-3, 3:-3].std() > 0
    zero = torch.zeros(3 * 24, 24)
    torch.testing.assert_close(encoder.encode(["a/c2/x", "a/c3/x"], None), encoder.encode(["a/c2/x", "a/c3/x"], zero))
    emb = encoder.encode(["a/c0/x", "a/c1/x", "a/c2/x"], None)
    assert emb.shape == (3, 8) and torch.allclose(emb.norm(dim=1), torch.ones(3))


def test_a_frame_wider_than_half_the_image_is_refused():
    with pytest.raises(ValueError, match="prompt.length=12"):
        PromptedVisionEncoder(ModelConfig(image_size=24), ImageBackbone(TinyCNN(), "extract_features"), None, 12)


def test_warped_views_keep_the_drawing_and_depend_only_on_the_seed():
    x = torch.ones(2, 1, 40, 40)
    x[:, :, 15:25, 10:30] = 0  # a bar of ink
    a, b = warp(x, np.random.default_rng([3, 1])), warp(x, np.random.default_rng([3, 1]))
    assert torch.equal(a, b) and not torch.allclose(a, x) and not torch.allclose(a[0], a[1])
    assert a.min() >= 0 and a.max() <= 1 and (a[:, :, :5] > 0.99).all()  # the paper stays paper
    assert torch.allclose((1 - a).sum((1, 2, 3)), (1 - x).sum((1, 2, 3)), rtol=0.3)  # about as much ink


def test_the_views_loss_draws_fresh_warps_per_step_and_trains_the_frame(encoder):
    from metaray.core import InnerConfig
    from metaray.data import Episode
    from metaray.models.classifier import PromptedClassifier

    ids = ("a/c0/x", "a/c1/x", "a/c2/x")
    episode = Episode(ids, np.arange(3), ("a/c3/x",), np.array([0]), ("c0", "c1", "c2"))
    model = PromptedClassifier(encoder)
    prompt = encoder.init_prompt(PromptConfig(length=3, init="random")).requires_grad_(True)
    params = {"prompt": prompt}
    views = model.support_loss_fn(episode, InnerConfig(views=2), seed=0)
    plain = model.support_loss_fn(episode, InnerConfig(), seed=0)
    assert views(params, 0).item() == views(params, 0).item() != views(params, 1).item()
    assert plain(params, 0).item() == plain(params, 1).item() != views(params, 0).item()  # one shot: no draw
    views(params, 0).backward()
    grad = prompt.grad.view(3, 24, 24)
    assert grad[:, 3:-3, 3:-3].abs().sum() == 0 and grad[:, :3].abs().sum() > 0


def test_an_image_region_prompt_covers_frame_and_drawing(encoder):
    whole = PromptedVisionEncoder(encoder.cfg, encoder.model, encoder.pixels, 3, region="image")
    theta = whole.init_prompt(PromptConfig(length=3, init="random"))
    assert (theta != 0).all()
    prompt = theta.clone().requires_grad_(True)
    whole.embed(["a/c0/x"], prompt).sum().backward()
    assert prompt.grad.view(3, 24, 24)[:, 3:-3, 3:-3].abs().sum() > 0  # the drawing's pixels learn too
    assert torch.allclose(whole.images(["a/c0/x"], theta) - whole.images(["a/c0/x"], None), theta.view(1, 3, 24, 24))
