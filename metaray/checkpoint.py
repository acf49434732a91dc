"""Checkpoints: safetensors + JSON, never pickle; tiny, since the backbone is frozen.

A checkpoint is a folder `round-NNNNNN/` with `state.safetensors` (θ and the outer
optimizer's tensors) and `meta.json` (round, config, metrics, optimizer scalars). It
is written to a temporary folder and renamed into place, so a crash never leaves a
half-written checkpoint; `latest` and `best` name the current ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.safetensors"
META_FILE = "meta.json"


class CheckpointError(ValueError):
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


def _write_pointer(run_dir: Path, name: str, target: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{name}.")
    with os.fdopen(fd, "w") as f:
        f.write(target)
    os.replace(tmp, run_dir / name)


def save_checkpoint(run_dir: Path, aggregator_state: dict, info: dict, keep_last: int = 3, best: bool = False) -> Path:
    """Write round-NNNNNN/ atomically, point `latest` (and `best`) at it, prune old ones."""
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"round-{aggregator_state['round']:06d}"
    optim_tensors, optim_meta = _flatten_optimizer(aggregator_state["optimizer"])
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}."))
    save_file({"meta_prompt": aggregator_state["meta_prompt"].contiguous(), **optim_tensors}, str(tmp / STATE_FILE))
    meta = {"round": aggregator_state["round"], "optimizer": optim_meta, **info}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    final = run_dir / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_pointer(run_dir, "latest", name)
    if best:
        _write_pointer(run_dir, "best", name)
    _prune(run_dir, keep_last)
    return final


def _prune(run_dir: Path, keep_last: int) -> None:
    protected = {(run_dir / p).read_text().strip() for p in ("latest", "best") if (run_dir / p).is_file()}
    rounds = sorted(p for p in run_dir.glob("round-*") if p.is_dir())
    for old in rounds[: max(len(rounds) - keep_last, 0)]:
        if old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A checkpoint folder from itself, a run folder (its `best`, else `latest`), or a state file."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == STATE_FILE:
        path = path.parent
    if (path / STATE_FILE).is_file():
        return path
    for pointer in (which, "latest"):
        if (path / pointer).is_file():
            return path / (path / pointer).read_text().strip()
    raise CheckpointError(f"no checkpoint at {path}: expected a run folder (with 'latest') or a round-* folder")


def load_checkpoint(path: str | Path, which: str = "best") -> tuple[dict, dict]:
    """(aggregator state, meta) of the checkpoint `path` names."""
    folder = resolve_checkpoint(path, which)
    try:
        tensors = load_file(str(folder / STATE_FILE))
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"unreadable checkpoint {folder}: {err}") from err
    state = {
        "meta_prompt": tensors["meta_prompt"],
        "optimizer": _unflatten_optimizer(tensors, meta["optimizer"]),
        "round": meta["round"],
    }
    return state, meta
