"""From per-level logits to per-level probabilities, independently or along the tree."""

from __future__ import annotations

import torch


def independent_probabilities(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each head's softmax on its own: the paper's evaluation."""
    return [torch.softmax(level.float(), dim=1) for level in logits]


def path_probabilities(logits: list[torch.Tensor], parents: list[torch.Tensor]) -> list[torch.Tensor]:
    """Score a class by the log-probability of its whole path (itself and every ancestor).

    ``parents[h]`` maps each class of level ``h + 1`` (0-based ``h >= 1``) to its parent at
    level ``h``; ``parents[0]`` is unused. A fine class whose coarse ancestor is unlikely is
    pulled down, so fine predictions stay consistent with what the coarse heads see.
    """
    path_scores: list[torch.Tensor] = []
    for h, level in enumerate(logits):
        own = torch.log_softmax(level.float(), dim=1)
        if h > 0:
            own = own + path_scores[h - 1][:, parents[h]]
        path_scores.append(own)
    return [torch.softmax(s, dim=1) for s in path_scores]


def fused_probabilities(probabilities: list[torch.Tensor], log_probabilities: list[torch.Tensor],
                        weight: float) -> list[torch.Tensor]:
    """Per level, ``p ∝ probabilities × exp(weight × log_probabilities)``: a second model's
    opinion (``hle_stream.core.discriminant``) multiplied in. ``probabilities`` on any device,
    the second model's on the host; the result is on the host."""
    return [torch.softmax(torch.log(p.float().cpu()) + weight * lp, dim=1)
            for p, lp in zip(probabilities, log_probabilities)]
