"""Inside a Ray Train worker: the frozen backbone partitioned by DeepSpeed ZeRO-3.

The only module that imports deepspeed. Each of the W workers holds 1/W of every
backbone parameter; a forward (or backward) pass gathers one layer at a time from
all ranks and frees it again, so the ranks must run the same number of passes
(lockstep). The prompt is not part of the engine: it is an ordinary leaf tensor of
the worker's own `core.adapt` loop, and autograd carries its gradient back through
the gathered layers. Nothing in the engine is trainable, so ranks never average
gradients and each keeps its own task's φ — the inner loop, the pseudo-gradients
and the heads are the same code as in actor mode.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import safetensors.torch
import torch

from metaray.config import ExperimentConfig, ModelConfig, PromptConfig, ShardedConfig
from metaray.distributed.adapter import EvalResult, TaskAdapter, TaskResult, tensor_digest
from metaray.errors import MetarayError
from metaray.kinds import kind_named, kind_of
from metaray.models import resolve_backbone
from metaray.runtime import process_memory
from metaray.storage import CACHE_ENV

DEEPSPEED_EXTRA = "pip install 'metaray[deepspeed]'"
MISSING_DEEPSPEED = f"sharded.enabled=true needs DeepSpeed, which is not installed: {DEEPSPEED_EXTRA}"


class ShardedModeError(MetarayError, RuntimeError):
    """Sharded mode cannot run as asked (DeepSpeed missing, workers failed, work that
    cannot run in lockstep); the message says what to change."""


def check_deepspeed() -> None:
    """Fail on the driver, before any worker starts, where DeepSpeed is missing."""
    if importlib.util.find_spec("deepspeed") is None:
        raise ShardedModeError(MISSING_DEEPSPEED)


def import_deepspeed():
    try:
        import deepspeed
    except ImportError as err:
        raise ImportError(f"{MISSING_DEEPSPEED} ({err})") from err
    return deepspeed


def deepspeed_config(s: ShardedConfig) -> dict:
    """ZeRO-3 for a frozen module: no optimizer, nothing trainable in the engine."""
    zero: dict = {
        "stage": 3,
        "stage3_param_persistence_threshold": s.persistence_threshold,
        # DeepSpeed's defaults prefetch and keep up to 1e9 gathered elements for reuse (the
        # whole of a small model); 0 frees each layer as soon as its pass is done.
        "stage3_prefetch_bucket_size": s.prefetch_elements,
        "stage3_max_reuse_distance": s.prefetch_elements,
        "stage3_max_live_parameters": max(s.prefetch_elements, 2_000_000),
    }
    if s.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": zero,
        "bf16": {"enabled": s.dtype == "bf16"},
    }


def converted_gguf(cfg: ModelConfig, kind: str, converter: bool, barrier) -> ModelConfig:
    """A GGUF backbone as an fp32 safetensors folder in `$METARAY_CACHE/models`, written
    once per machine (by `converter`, atomically), so that `zero.Init` can build it
    partitioned: transformers dequantises a GGUF file whole in every process. One folder
    per task kind: a causal LM keeps its output head, an encoder has none."""
    source = resolve_backbone(cfg)
    if not source.gguf_file:
        return cfg
    cache = Path(os.environ.get(CACHE_ENV, "~/.cache/metaray")).expanduser() / "models"
    folder = cache / f"{Path(source.gguf_file).stem}-{kind}-fp32"
    if converter and not folder.is_dir():
        tokenizer, model = kind_named(kind).load_backbone(cfg)
        partial = cache / f".{folder.name}.{os.getpid()}"
        # transformers will not save a model it loaded from GGUF; its weights are plain fp32 now
        model.config.save_pretrained(partial)
        safetensors.torch.save_model(model, str(partial / "model.safetensors"))
        tokenizer.save_pretrained(partial)
        try:
            os.replace(partial, folder)
        except OSError:  # another node's leader, sharing this cache, got there first
            if not folder.is_dir():
                raise
    barrier()
    return dataclasses.replace(cfg, backbone=str(folder), gguf_file="")


def load_partitioned(cfg: ExperimentConfig, is_node_leader: bool):
    """(tokenizer, module, engine): the backbone partitioned over the process group."""
    deepspeed = import_deepspeed()
    ds_config = deepspeed_config(cfg.sharded)
    if cfg.sharded.zero_init:
        from transformers.integrations import HfDeepSpeedConfig

        model_cfg = converted_gguf(cfg.model, cfg.kind, is_node_leader, torch.distributed.barrier)
        zero3 = HfDeepSpeedConfig(ds_config)  # noqa: F841 (while alive, from_pretrained builds under zero.Init)
        tokenizer, model = kind_of(cfg).load_backbone(model_cfg)
    else:  # every rank loads the whole model, then deepspeed.initialize partitions it
        tokenizer, model = kind_of(cfg).load_backbone(cfg.model)
    engine, *_ = deepspeed.initialize(model=model, config=ds_config)
    engine.module.eval()
    return tokenizer, engine.module, engine


class ShardedWorker:
    """One rank: a `TaskAdapter` over the partitioned backbone. Every method is collective:
    all ranks call it with their own share of the work."""

    def __init__(self, cfg: ExperimentConfig, is_node_leader: bool) -> None:
        torch.set_num_threads(cfg.ray.torch_threads)
        self.memory_log = {"before_backbone": process_memory()}
        tokenizer, model, self.engine = load_partitioned(cfg, is_node_leader)
        self.memory_log["after_backbone"] = process_memory()
        self.model = model
        self.adapter = TaskAdapter(cfg, loaded=(tokenizer, model))
        self.deepspeed = import_deepspeed()

    def init_prompt(self, prompt_cfg: PromptConfig | None) -> torch.Tensor:
        """θ₀ from the (gathered) embedding table."""
        weight = self.model.get_input_embeddings().weight
        with self.deepspeed.zero.GatheredParameters([weight]):
            return self.adapter.init_prompt(prompt_cfg)

    def adapt(self, meta_prompt: torch.Tensor, specs) -> list[TaskResult]:
        return [self._released(self.adapter.adapt(meta_prompt, spec)) for spec in specs]

    def evaluate(self, units, steps, inner, heads) -> list[EvalResult]:
        return [self._released(self.adapter.evaluate(init, spec, steps, inner, heads)) for init, spec in units]

    def _released(self, result):
        """Partition every layer again after a task. A backward pass over two forward passes
        leaves DeepSpeed's release hooks unbalanced and the layers whole; the models avoid
        that (one forward per backward), this makes sure of it."""
        self.engine.empty_partition_cache()
        return result

    def backbone_digest(self) -> str:
        """The digest `TaskAdapter.backbone_digest` gives for the whole model, gathered one
        parameter at a time (never the whole model at once)."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        buffers = dict(self.model.named_buffers())

        def full_tensors():
            for name in sorted(self.model.state_dict()):
                if name in params:
                    with self.deepspeed.zero.GatheredParameters([params[name]]):
                        yield name, params[name].data
                else:
                    yield name, buffers[name]

        return tensor_digest(full_tensors())

    def partition(self) -> dict[str, int]:
        """Elements of the backbone this rank holds (DeepSpeed's partitioned tensors), the
        model's total, and how many elements are resident whole right now."""
        params = list(self.model.parameters())
        return {
            "local": sum(p.ds_tensor.numel() for p in params),
            "total": sum(p.ds_numel for p in params),
            "whole_now": sum(p.data.numel() for p in params),
            "tensors": len(params),
        }

    def memory(self) -> dict[str, dict[str, float]]:
        """This process's memory (MiB) before and after partitioning the backbone, and now."""
        return {**self.memory_log, "now": process_memory()}
