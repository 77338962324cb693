"""Forward passes for prediction, shared by the learner and the serving snapshot, so both turn
the same inputs into the same probabilities."""

from __future__ import annotations

import torch

from hle_stream.core.decode import fused_probabilities, independent_probabilities, path_probabilities
from hle_stream.core.discriminant import LinearDiscriminant
from hle_stream.core.model import HierarchicalNet


def prepare_inputs(x: torch.Tensor, is_image: bool, device: torch.device) -> torch.Tensor:
    """Raw features to network inputs on ``device``: floats for vectors; images (uint8 0..255 or
    float 0..1) scaled to -1..1 in NHWC layout."""
    return scale_inputs(x.to(device, non_blocking=True), is_image)


def scale_inputs(x: torch.Tensor, is_image: bool) -> torch.Tensor:
    """``prepare_inputs`` where ``x`` is (on the host, for the discriminant, say)."""
    if not is_image:
        return x.float()
    images = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return ((images - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def level_probabilities(net: HierarchicalNet, x: torch.Tensor, is_image: bool, decode: str,
                        parents: list[torch.Tensor], use_amp: bool, chunk: int = 512,
                        discriminant: LinearDiscriminant | None = None,
                        discriminant_weight: float = 0.0) -> list[torch.Tensor]:
    """Probabilities over the known classes of each level (coarsest first), on the CPU; ``net``
    is left in the mode it was in. With a ``discriminant``, each level's log-probabilities gain
    ``discriminant_weight`` times the discriminant's (a product of experts)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    outputs: list[list[torch.Tensor]] = [[] for _ in net.heads]
    for start in range(0, x.shape[0], chunk):
        rows = x[start:start + chunk]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = net(prepare_inputs(rows, is_image, device))
        probs = path_probabilities(logits, parents) if decode == "path" else independent_probabilities(logits)
        if discriminant is not None:
            features = discriminant.features(scale_inputs(rows, is_image))
            probs = fused_probabilities(probs, discriminant.log_probabilities(features), discriminant_weight)
        for level, p in enumerate(probs):
            outputs[level].append(p.cpu())
    net.train(was_training)
    return [torch.cat(parts) if parts else torch.empty(0) for parts in outputs]
