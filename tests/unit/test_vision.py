"""Images: the Omniglot loader and split, and the visual prompt on a tiny CNN."""

import numpy as np
import pytest
import torch

from metaray.config import ModelConfig, PromptConfig, load_config
from metaray.data import load_corpus
from metaray.data.omniglot import omniglot_pixels
from metaray.distributed.adapter import source_config
from metaray.models.vision import PromptedVisionEncoder


def test_omniglot_has_8_alphabets_242_characters_split_by_alphabet(data_dir):
    src = source_config(load_config("configs/omniglot.yaml", [f"data.data_dir={data_dir}"]))
    corpora = {split: load_corpus(f"omniglot/{split}", src) for split in ("train", "val", "test")}
    assert sum(len(c.label_names) for c in corpora.values()) == 242  # Greek and Latin read once
    assert sum(len(c.texts) for c in corpora.values()) == 242 * 20
    alphabets = {s: {n.split("/")[0] for n in c.label_names} for s, c in corpora.items()}
    assert alphabets["test"] == {"Korean", "Sanskrit", "Tagalog"} and alphabets["val"] == {"Early_Aramaic"}
    assert len(alphabets["train"]) == 4 and not alphabets["train"] & (alphabets["test"] | alphabets["val"])
    assert all(np.bincount(c.labels).tolist() == [20] * len(c.label_names) for c in corpora.values())
    pixels = omniglot_pixels(corpora["test"].texts[:3], data_dir)
    assert pixels.shape == (3, 105, 105) and pixels.dtype == np.uint8 and set(np.unique(pixels)) == {0, 255}


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
    model = TinyCNN().eval().requires_grad_(False)
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
        PromptedVisionEncoder(ModelConfig(image_size=24), TinyCNN(), lambda ids: None, 12)
