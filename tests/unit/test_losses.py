import math

import torch
import torch.nn.functional as F

from hle_stream.core.losses import per_sample_loss


def test_incoming_rows_compete_only_among_the_classes_the_incoming_rows_name():
    logits = [torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]])]
    targets = torch.tensor([[0], [1], [2]])  # rows 0-1 incoming (classes 0, 1), row 2 replayed (class 2)
    loss = per_sample_loss(logits, targets, incoming=2)
    among_0_1 = F.cross_entropy(logits[0][:2, :2], targets[:2, 0], reduction="none")
    assert torch.allclose(loss[:2], among_0_1)  # class 2's logit takes no part for the stream rows
    assert math.isclose(float(loss[2]), float(F.cross_entropy(logits[0][2:], targets[2:, 0])), rel_tol=1e-6)
    assert torch.allclose(per_sample_loss(logits, targets), F.cross_entropy(logits[0], targets[:, 0], reduction="none"))


def test_a_cutmix_partner_s_class_stays_visible_to_the_incoming_row():
    logits = [torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])]
    targets = torch.tensor([[0], [2]])
    partner, lam = torch.tensor([1, 0]), torch.tensor([0.7, 0.3])
    loss = per_sample_loss(logits, targets, partner, lam, incoming=1)
    visible = logits[0][0, [0, 2]]  # the row's own class 0 and its partner's class 2
    expected = 0.7 * F.cross_entropy(visible[None], torch.tensor([0])) + 0.3 * F.cross_entropy(visible[None], torch.tensor([1]))
    assert math.isclose(float(loss[0]), float(expected), rel_tol=1e-6) and math.isfinite(float(loss.sum()))
