"""Batch-level augmentation on the learner's device: random crop + flip and in-level CutMix for
images, feature dropout for vectors.

The random draws are made on the host (the learner's generator) and their results sent to the
device without waiting for it."""

from __future__ import annotations

from functools import lru_cache

import torch

from hle_stream.core.rng import global_rng_from


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel-shifted crop and horizontal flip of each image of an (N,C,H,W) batch."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device, non_blocking=True)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device, non_blocking=True)
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device, non_blocking=True)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def cutmix_within_levels(
    x: torch.Tensor, levels: torch.Tensor, generator: torch.Generator, alpha: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix that pastes only between samples of the same labelled level.

    ``levels`` is on the host. Returns the mixed images, for each sample the index of its
    partner (on the host), and the share ``lam`` of the sample's own image (1 where a level has
    a single sample).
    """
    n, _, h, w = x.shape
    partner = torch.arange(n)
    lam = torch.ones(n)
    mixed = x.clone()
    beta = _beta(alpha)
    for level in torch.unique(levels).tolist():
        group = (levels == level).nonzero().flatten()
        if group.numel() < 2:
            continue
        perm = group[torch.randperm(group.numel(), generator=generator)]
        ratio = float(beta.sample()) if alpha > 0 else 1.0
        cut_h, cut_w = int(h * (1 - ratio) ** 0.5), int(w * (1 - ratio) ** 0.5)
        cy, cx = (int(torch.randint(s, (1,), generator=generator)) for s in (h, w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        pasted = x[perm.to(x.device, non_blocking=True), :, y0:y1, x0:x1]
        mixed[group.to(x.device, non_blocking=True), :, y0:y1, x0:x1] = pasted
        partner[group] = perm
        lam[group] = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, partner, lam.to(x.device, non_blocking=True)


def feature_dropout(x: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Each feature of an (N, D) batch zeroed with probability ``share``, the others scaled by
    ``1 / (1 - share)``: a vector's counterpart of a crop, which makes a single pass over
    high-dimensional features (text) less sure of any one feature."""
    keep = (torch.rand(x.shape, generator=generator) >= share).to(x.device, non_blocking=True)
    return x * keep.to(x.dtype) / (1.0 - share)


@lru_cache(maxsize=4)
def _beta(alpha: float) -> torch.distributions.Beta:
    """Built once: constructing a distribution (argument checks, broadcasting) cost more than
    the sampling itself on every training step."""
    return torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)), validate_args=False)


class Augmentation:
    """The augmentation part: what a training step does to its inputs (prediction sees them as
    they are). Crop/flip and CutMix apply to images (all, or colour ones only), feature dropout
    to vectors; the draws come from the learner's generator, CutMix's Beta from its second one."""

    def __init__(self, input_shape: tuple[int, ...], scope: str, crop_flip: bool, cutmix: bool,
                 vector_dropout: float, generator: torch.Generator, implicit_rng: torch.Generator) -> None:
        is_image = len(input_shape) == 3
        augmented = is_image and (scope == "images" or input_shape[0] >= 3)
        self.crop_flip = augmented and crop_flip
        self.cutmix = augmented and cutmix
        self.dropout = 0.0 if is_image else vector_dropout
        self.generator = generator
        self.implicit_rng = implicit_rng

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch's network inputs, augmented."""
        if self.crop_flip:
            x = random_crop_flip(x, self.generator).contiguous(memory_format=torch.channels_last)
        if self.dropout > 0:
            x = feature_dropout(x, self.dropout, self.generator)
        return x

    def mix(self, x: torch.Tensor, levels: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """CutMix within levels on half the steps: (inputs, partner, lam), or the inputs unmixed."""
        if self.cutmix and float(torch.rand(1, generator=self.generator)) < 0.5:
            with global_rng_from(self.implicit_rng):  # its Beta distribution takes no generator
                return cutmix_within_levels(x, levels, self.generator)
        return x, None, None
