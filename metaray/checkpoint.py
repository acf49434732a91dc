"""Checkpoints: safetensors + JSON, never pickle; tiny, since the backbone is frozen.

A checkpoint is a folder `round-NNNNNN/` with `state.safetensors` (θ and the outer
optimizer's tensors) and `meta.json` (round, config, metrics, optimizer scalars). It
is written to a temporary folder and renamed into place, so a crash never leaves a
half-written checkpoint; `latest` and `best` name the current ones. The run folder
may be a local path or an object-storage URI (`metaray.storage`).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from metaray.config import ConfigError, PromptConfig
from metaray.errors import MetarayError
from metaray.storage import RunStore, StorageError

STATE_FILE = "state.safetensors"
META_FILE = "meta.json"


class CheckpointError(MetarayError, ValueError):
    """A checkpoint that cannot be read; the message names the path."""


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().clone().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    location: str | Path, aggregator_state: dict, info: dict, keep_last: int = 3, best: bool = False
) -> str:
    """Write round-NNNNNN/ atomically, point `latest` (and `best`) at it, prune old ones.
    `location`: a run folder path or URI (see `metaray.storage`); returns the checkpoint's."""
    store = RunStore(location)
    name = f"round-{aggregator_state['round']:06d}"
    optim_tensors, optim_meta = _flatten_optimizer(aggregator_state["optimizer"])
    meta = {"round": aggregator_state["round"], "optimizer": optim_meta, **info}
    files = {
        STATE_FILE: save({"meta_prompt": aggregator_state["meta_prompt"].contiguous(), **optim_tensors}),
        META_FILE: json.dumps(meta, indent=2, default=str).encode(),
    }
    # Local disk: a hidden folder renamed into place. Object storage: each PUT is atomic and
    # the folder is only named by `latest` once complete, so readers never see a part.
    folder = f".{name}.{uuid.uuid4().hex}" if store.local else name
    for file, data in files.items():
        store.write_bytes(f"{folder}/{file}", data)
    if store.local:
        store.replace_dir(folder, name)
    store.write_text("latest", name)
    if best:
        store.write_text("best", name)
    _prune(store, keep_last)
    return store.display(name)


def _prune(store: RunStore, keep_last: int) -> None:
    protected = {store.read_text(p).strip() for p in ("latest", "best") if store.is_file(p)}
    rounds = store.dirs("round-")
    for old in rounds[: max(len(rounds) - keep_last, 0)]:
        if old not in protected:
            store.delete_dir(old)


def _locate(location: str | Path, which: str) -> tuple[RunStore, str]:
    """(store, folder) of a checkpoint folder, a run folder (its `which`, else `latest`),
    or a state file."""
    location = str(location)
    if location.endswith("/" + STATE_FILE):
        location = location[: -len(STATE_FILE) - 1]
    store = RunStore(location)
    if store.is_file(STATE_FILE):
        return store, ""
    for pointer in (which, "latest"):
        if store.is_file(pointer):
            return store, store.read_text(pointer).strip()
    raise CheckpointError(f"no checkpoint at {location}: expected a run folder (with 'latest') or a round-* folder")


def resolve_checkpoint(location: str | Path, which: str = "best") -> str:
    """The checkpoint folder `location` names (see `_locate`)."""
    store, folder = _locate(location, which)
    return store.display(folder)


def load_checkpoint(location: str | Path, which: str = "best") -> tuple[dict, dict]:
    """(aggregator state, meta) of the checkpoint `location` names."""
    store, folder = _locate(location, which)
    prefix = f"{folder}/" if folder else ""
    try:
        tensors = load(store.read_bytes(prefix + STATE_FILE))
        meta = json.loads(store.read_bytes(prefix + META_FILE))
    except (StorageError, ValueError) as err:
        raise CheckpointError(f"unreadable checkpoint {store.display(folder)}: {err}") from err
    state = {
        "meta_prompt": tensors["meta_prompt"],
        "optimizer": _unflatten_optimizer(tensors, meta["optimizer"]),
        "round": meta["round"],
    }
    return state, meta


# prompt settings a θ is read with, and their defaults: the first two give θ its shape
PROMPT_SETTINGS = (("depth", 1), ("pool_size", 1), ("pool_temperature", 0.1))


def read_settings(prompt: dict) -> dict:
    """The PROMPT_SETTINGS a θ is read with, from a config's `prompt` section (defaults for
    those it lacks): a pool's temperature only where there is a pool."""
    settings = {key: prompt.get(key, default) for key, default in PROMPT_SETTINGS}
    if settings["pool_size"] == 1:
        del settings["pool_temperature"]
    return settings


def check_prompt_settings(where: str, state: dict, meta: dict, prompt: PromptConfig) -> None:
    """Refuse a checkpoint whose θ was meta-trained with another prompt.depth,
    prompt.pool_size or (a pool's) prompt.pool_temperature than `prompt` has, naming its
    shape and both settings."""
    saved = read_settings(meta.get("config", {}).get("prompt", {}))
    for key, now in read_settings(dataclasses.asdict(prompt)).items():
        was = saved.get(key, now)
        if was != now:
            raise ConfigError(
                f"{where}: its θ, of shape {tuple(state['meta_prompt'].shape)}, was meta-trained with "
                f"prompt.{key}={was}, and this config has prompt.{key}={now}; set prompt.{key}={was}"
            )
