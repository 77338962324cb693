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

    ``targets``, ``partner`` and ``weights`` are host tensors, ``logits`` and ``lam`` on the
    learner's device: which rows have a target at a level is decided on the host, so the loss
    never waits for the device. A level without targets in the batch is left out of the graph
    (its head gets no gradient, so Adam leaves its weights and moments alone).
    """
    device = logits[0].device if logits else targets.device
    total = torch.zeros(targets.shape[0], device=device)
    on_device = targets.to(device, non_blocking=True)
    partner_on_device = partner.to(device, non_blocking=True) if partner is not None else None
    weights_on_device = weights.to(device, non_blocking=True) if weights is not None else None
    for level, level_logits in enumerate(logits):
        valid = targets[:, level] >= 0
        if partner is not None:
            valid &= targets[partner, level] >= 0
        if not bool(valid.any()):
            continue
        host_rows = valid.nonzero().flatten()
        rows = host_rows.to(device, non_blocking=True)
        own = on_device[:, level]
        scores = level_logits[rows].float()
        if incoming:
            hidden = _asymmetric_mask(targets[:, level], partner, incoming, host_rows, scores.shape[1])
            scores = scores.masked_fill(hidden.to(device, non_blocking=True), torch.finfo(scores.dtype).min)
        loss = F.cross_entropy(scores, own[rows], reduction="none")
        if partner_on_device is not None and lam is not None:
            mix = lam[rows]
            loss = mix * loss + (1 - mix) * F.cross_entropy(scores, own[partner_on_device[rows]], reduction="none")
        if weights_on_device is not None:
            loss = loss * weights_on_device[rows, level]
        total = total.index_add(0, rows, loss)
    return total


def _asymmetric_mask(own: torch.Tensor, partner: torch.Tensor | None, incoming: int, rows: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """(len(rows), num_classes), on the host: in the incoming rows, the classes no incoming row
    (or its CutMix partner) is labelled with at this level."""
    named = own[:incoming]
    if partner is not None:
        named = torch.cat([named, own[partner[:incoming]]])
    present = torch.zeros(num_classes, dtype=torch.bool)
    present[named[named >= 0]] = True
    return (rows < incoming)[:, None] & ~present[None, :]
