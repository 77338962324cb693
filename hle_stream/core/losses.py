"""Per-level cross-entropy over whichever (sample, level) targets are known."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_loss(
    logits: list[torch.Tensor],
    targets: torch.Tensor,
    partner: torch.Tensor | None = None,
    lam: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    incoming: int = 0,
) -> torch.Tensor:
    """Sum over levels of each sample's cross-entropy at the levels where its target is ≥ 0.

    ``targets`` is (N, max_depth) with -1 for no target. With CutMix, ``partner`` and ``lam``
    mix each sample's loss with its partner's targets. ``weights`` (N, max_depth) scales each
    entry (pseudo-labels get a lower weight than true labels). ``incoming`` > 0: the first
    ``incoming`` rows are the stream's, scored asymmetrically (ER-ACE, Caccia et al. 2022): their
    softmax at each level runs over the classes the incoming rows name only, so that a new class's
    first samples do not push the old classes' logits down; replayed rows see every class.
    """
    total = torch.zeros(targets.shape[0], device=targets.device)
    for level, level_logits in enumerate(logits):
        own = targets[:, level]
        valid = own >= 0
        if partner is not None:
            valid &= targets[partner, level] >= 0
        if not bool(valid.any()):
            continue
        rows = valid.nonzero().flatten()
        scores = level_logits[rows].float()
        if incoming:
            scores = _asymmetric(scores, rows < incoming, own, partner, incoming)
        loss = F.cross_entropy(scores, own[rows], reduction="none")
        if partner is not None and lam is not None:
            mix = lam[rows]
            loss = mix * loss + (1 - mix) * F.cross_entropy(scores, targets[partner[rows], level], reduction="none")
        if weights is not None:
            loss = loss * weights[rows, level]
        total = total.index_add(0, rows, loss)
    return total


def _asymmetric(scores: torch.Tensor, is_incoming: torch.Tensor, own: torch.Tensor, partner: torch.Tensor | None,
                incoming: int) -> torch.Tensor:
    """Mask, in the incoming rows, the logits of the classes no incoming row (or its CutMix
    partner) is labelled with at this level."""
    named = own[:incoming]
    if partner is not None:
        named = torch.cat([named, own[partner[:incoming]]])
    present = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    present[named[named >= 0]] = True
    hidden = is_incoming[:, None] & ~present[None, :]
    return scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
