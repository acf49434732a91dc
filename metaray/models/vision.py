"""A frozen image backbone that sees a visual prompt: learnable pixels added to the image.

A drawing (grayscale) is resized to S − 2p pixels a side and placed inside a frame p
pixels wide (S = `model.image_size`, p = `prompt.length`), repeated over 3 channels and
normalised with the backbone's mean and std (for EfficientNet-Lite: scaled to [−1, 1]).
The prompt is added on the frame only (`prompt.region: frame`, padding prompts, Bahng
et al. 2022) or on the whole image, frame and drawing (`image`, as in adversarial
reprogramming, Elsayed et al. 2019); without one the frame is 0, the mean colour. The
embedding is the backbone's features (`ImageBackbone`), L2-normalised, so the prototype
and probe heads of `PromptedClassifier` work on it unchanged. The prompt is kept as a
(3·S, S) matrix, zero where it is not added, so that the aggregator, checkpoints and
outer optimizers treat it as any other (P, D) prompt.

A deep visual prompt (`prompt.depth` d > 1; the convolutional analogue of VPT-deep, Jia
et al. 2022) also adds a learnable map, one value per channel and position, to the
feature maps after each of the backbone's first d − 1 stages. Those maps are rows of
the same matrix, after the pixels: flattened in stage order, zero-padded to whole rows
of S. They start at zero, so θ₀ of any depth embeds as the pixel prompt alone does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from metaray.config import ModelConfig, PromptConfig
from metaray.models.deep import forward_hooks, hooks_lock
from metaray.models.image_backbone import ImageBackbone, check_stage_depth

Pixels = Callable[[Sequence[str]], np.ndarray]  # image ids -> (N, H, W) uint8


class PromptedVisionEncoder:
    """Image embeddings (N, D) from a frozen image backbone with an optional visual
    prompt; the same interface as `PromptedEncoder`."""

    def __init__(
        self,
        cfg: ModelConfig,
        model: ImageBackbone,
        pixels: Pixels,
        frame: int,
        region: str = "frame",
        depth: int = 1,
    ) -> None:
        if not 1 <= frame < cfg.image_size // 2:
            raise ValueError(f"prompt.length={frame} (the frame's width) must be in [1, model.image_size / 2)")
        self.cfg, self.model, self.pixels, self.frame, self.depth = cfg, model, pixels, frame, depth
        self.device = next(model.parameters()).device
        size = cfg.image_size
        self.mask = torch.ones(3, size, size)  # 1 where the prompt is added
        self.mean, self.std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.mean, model.std))
        if region == "frame":
            self.mask[:, frame:-frame, frame:-frame] = 0
        self.stages: list[torch.nn.Module] = []
        self.map_shapes: list[torch.Size] = []  # (C, H, W) of each prompted stage's output
        if depth > 1:
            stages = model.stages
            check_stage_depth(cfg.backbone, len(stages), depth)
            self.stages = stages[: depth - 1]
            self.map_shapes = self._stage_shapes()
        self.rows = 3 * size + math.ceil(sum(math.prod(s) for s in self.map_shapes) / size)
        self._hooks = hooks_lock(bool(self.stages))

    @torch.no_grad()
    def _stage_shapes(self) -> list[torch.Size]:
        shapes: list[torch.Size] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape[1:])) for m in self.stages]
        try:
            self.model(torch.zeros(1, 3, self.cfg.image_size, self.cfg.image_size, device=self.device))
        finally:
            for hook in hooks:
                hook.remove()
        return shapes

    def split(self, prompt: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the pixel prompt (3, S, S), the feature-map prompts (C, H, W) in stage order) of
        a prompt matrix of this depth; any other shape is refused, naming both."""
        size = self.cfg.image_size
        if tuple(prompt.shape) != (self.rows, size):
            raise ValueError(
                f"this visual prompt (prompt.depth={self.depth}, model.image_size={size}) has shape "
                f"{(self.rows, size)}, got {tuple(prompt.shape)}: a prompt of another depth or image size"
            )
        flat = prompt[3 * size :].reshape(-1)
        sizes = [math.prod(s) for s in self.map_shapes]
        parts = flat.split([*sizes, flat.numel() - sum(sizes)])[:-1]  # the last part: the padding
        maps = [part.view(shape) for part, shape in zip(parts, self.map_shapes, strict=True)]
        return prompt[: 3 * size].reshape(3, size, size), maps

    @functools.cached_property
    def hidden_size(self) -> int:
        return int(self.embed_pixels(torch.zeros(1, 3, self.cfg.image_size, self.cfg.image_size)).shape[1])

    def init_prompt(self, cfg: PromptConfig) -> torch.Tensor:
        """θ₀, shape (rows, S): the pixels N(0, 0.1²) where the prompt is added, zero
        elsewhere; the feature-map prompts (depth > 1) zero."""
        size = self.cfg.image_size
        noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(cfg.seed))
        pixels = (0.1 * noise * self.mask).view(-1, size)
        return torch.cat([pixels, torch.zeros(self.rows - 3 * size, size)])

    def images(self, ids, prompt: torch.Tensor | None, rng: np.random.Generator | None = None) -> torch.Tensor:
        """(B, 3, S, S): the drawings in their frame, the prompt added on its region;
        each drawing randomly warped first where `rng` is given (see `warp`)."""
        size, frame = self.cfg.image_size, self.frame
        x = torch.from_numpy(self.pixels(list(ids))).float().div(255).unsqueeze(1)  # (B, 1, H, W) in [0, 1]
        if rng is not None:
            x = warp(x, rng)
        x = F.interpolate(x, size=(size - 2 * frame,) * 2, mode="bilinear", antialias=True, align_corners=False)
        x = F.pad((x.expand(-1, 3, -1, -1) - self.mean) / self.std, (frame,) * 4)  # the frame: 0, the mean colour
        if prompt is not None:
            x = x + self.split(prompt)[0] * self.mask
        return x

    def embed_pixels(self, x: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) normalised features of pixels `x`; a deep `prompt`'s feature-map prompts
        added after their stages (its pixels are `images`' to add)."""
        maps = self.split(prompt)[1] if prompt is not None else []  # none without a deep prompt
        stages = self.stages[: len(maps)]
        hooks = [(stage, functools.partial(_add_map, m.to(self.device))) for stage, m in zip(stages, maps, strict=True)]
        with forward_hooks(self._hooks, hooks):
            return F.normalize(self.model(x.to(self.device)).float(), dim=-1).cpu()

    def embed(self, ids, prompt: torch.Tensor | None) -> torch.Tensor:
        """(B, D) normalised embeddings; differentiable in `prompt` (rows, S)."""
        return self.embed_pixels(self.images(ids, prompt), prompt)

    def embed_views(self, ids, prompt: torch.Tensor | None, views: int, rng: np.random.Generator, edits=None):
        """((1 + views)·B, D): the drawings, then `views` randomly warped copies of each
        (view v of drawing i at row (1 + v)·B + i), in one forward pass. `edits` (text
        edits) do not apply to drawings: the kind's rules refuse them."""
        ids = list(ids)
        if not views:
            return self.embed(ids, prompt)
        return self.embed_pixels(torch.cat([self.images(ids, prompt), self.images(ids * views, prompt, rng)]), prompt)

    @torch.no_grad()
    def encode(self, ids, prompt: torch.Tensor | None) -> torch.Tensor:
        """(N, D) embeddings without gradients, in batches of model.encode_batch_size."""
        size = self.cfg.encode_batch_size
        parts = [self.embed(ids[i : i + size], prompt) for i in range(0, len(ids), size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.hidden_size)


def _add_map(prompt_map: torch.Tensor, _module, _inputs, output: torch.Tensor) -> torch.Tensor:
    """A forward hook: the stage's output (B, C, H, W) plus its prompt map (C, H, W)."""
    return output + prompt_map


def warp(x: torch.Tensor, rng: np.random.Generator, degrees: float = 15.0, shift: float = 0.1) -> torch.Tensor:
    """Random affine copies of (B, 1, H, W) drawings in [0, 1] (paper 1, ink 0): rotated by
    up to ±`degrees`, scaled by 0.9–1.1 and shifted by up to `shift` of the side, in the
    spirit of the affine warps in the Omniglot literature (Lake et al. 2015)."""
    b = x.shape[0]
    angle = np.deg2rad(rng.uniform(-degrees, degrees, b))
    scale = rng.uniform(0.9, 1.1, b)
    move = rng.uniform(-2 * shift, 2 * shift, (b, 2))  # grid coordinates span [-1, 1]
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = torch.tensor(np.stack([np.stack([cos, -sin, move[:, 0]], 1), np.stack([sin, cos, move[:, 1]], 1)], 1))
    grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
    ink = F.grid_sample(1 - x, grid, align_corners=False)  # outside the drawing: no ink
    return 1 - ink
