"""Actors map one read-only copy of the backbone from the object store: the same
model bit for bit, and (almost) no memory of their own for its weights."""

import pytest
import torch

from metaray.config import load_config
from metaray.distributed import RayRunner
from metaray.models import PromptedEncoder, export_backbone, import_backbone, load_backbone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cfg(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return load_config("configs/tiny.yaml", [f"data.data_dir={data_dir}", f"output.dir={out}"])


def test_imported_backbone_is_a_view_of_the_export_and_embeds_identically(cfg):
    tokenizer, model = load_backbone(cfg.model)
    shared = export_backbone(tokenizer, model)
    _, imported = import_backbone(shared)
    originals, views = model.state_dict(), imported.state_dict()
    assert originals.keys() == views.keys()
    for name, tensor in originals.items():
        assert torch.equal(tensor, views[name]), name
    weight = imported.get_input_embeddings().weight
    assert weight.data_ptr() == shared.arrays["embeddings.word_embeddings.weight"].ctypes.data, "weights were copied"
    texts = ["what is my balance", "book a table for two"]
    prompt = model.get_input_embeddings().weight[:4].detach()
    plain = PromptedEncoder(cfg.model, tokenizer, model).encode(texts, prompt)
    torch.testing.assert_close(PromptedEncoder(cfg.model, tokenizer, imported).encode(texts, prompt), plain)


def test_each_actor_holds_under_a_third_of_the_weights_privately(cfg, ray_local):
    runner = RayRunner(cfg)
    try:
        weights_mib = ray_local.get(runner.backbone_ref).nbytes / 2**20
        digests = set(runner.backbone_digests())  # reads every weight, so its pages are mapped
        memory = runner.memory()
    finally:
        runner.shutdown()
    assert len(digests) == 1
    for actor in memory:
        private = actor["now"]["uss"] - actor["before_backbone"]["uss"]
        assert private < weights_mib / 3, f"an actor holds {private:.0f} MiB of its own for {weights_mib:.0f} MiB"
        assert actor["now"]["shared"] > weights_mib, "the weights are not in shared memory"
