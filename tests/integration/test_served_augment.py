"""A served classification task adapted with text edits (`adapt.views` + `adapt.augment`)
stores the head fitted on its examples and their edited copies, the copies a pure
function of the examples: the same task gives the same head again."""

import pytest
import torch

from metaray.config import load_config
from metaray.core import InnerConfig, fit_linear_probe
from metaray.core.augment import TextEdits
from metaray.distributed import train
from metaray.serving.tasks import TaskClassifier, examples_episode

pytestmark = pytest.mark.integration
TEXTS = [
    "I lost my card yesterday and cannot find it",
    "my card is gone, please block it now",
    "what is the balance of my savings account",
    "how much money is left on my account",
]
LABELS = ["lost_card", "lost_card", "balance", "balance"]


def test_a_served_task_fits_its_head_on_the_examples_and_their_edited_copies(data_dir, tmp_path):
    run = tmp_path / "run"
    overrides = [f"data.data_dir={data_dir}", f"output.dir={run}", "ray.local=true", "meta.rounds=1"]
    train(load_config("configs/tiny.yaml", overrides), progress=False)
    edited = InnerConfig(steps=0, views=2, augment=TextEdits(token_dropout=0.3, word_swaps=1))
    served = TaskClassifier(str(run), edited)
    tensors, _ = served.adapt(TEXTS, LABELS)
    episode = examples_episode(TEXTS, LABELS)
    support, labels = served.classifier.fit_set(tensors["prompt"], episode, edited, seed=0)
    assert support.shape[0] == 3 * len(TEXTS)
    expected = fit_linear_probe(support, labels, episode.n_classes, served.classifier.scale)
    torch.testing.assert_close(tensors["head_weight"], expected.weight)
    assert torch.equal(served.adapt(TEXTS, LABELS)[0]["head_weight"], tensors["head_weight"])
    plain, _ = TaskClassifier(str(run), InnerConfig(steps=0)).adapt(TEXTS, LABELS)
    assert not torch.allclose(plain["head_weight"], tensors["head_weight"])
