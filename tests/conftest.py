"""Shared fixtures: the data directory and one local Ray for the integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> str:
    """`$METARAY_DATA_DIR`, else `../shared/data` beside the checkout (as in CI)."""
    path = Path(os.environ.get("METARAY_DATA_DIR", ROOT.parent / "shared" / "data"))
    assert path.is_dir(), f"test data not found at {path}; set METARAY_DATA_DIR"
    return str(path)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> str:
    """A tiny randomly initialised causal LM (Llama, 2 layers of width 32) saved as a
    Hugging Face folder with MiniLM's tokenizer: `model.backbone` for fast QA runs."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from metaray.config import ModelConfig
    from metaray.models import resolve_backbone

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(ModelConfig()).where)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.sep_token_id, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
