"""Contrastive loss (Hadsell, Chopra, LeCun, CVPR 2006, "Dimensionality Reduction by Learning an Invariant Mapping")."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import pairwise_distance, same_label
from embedlab.losses.base import MetricLoss, with_gradient


class ContrastiveLoss(MetricLoss):
    """ℓ(i, j) = ½·y·[d − m₊]₊² + ½·(1 − y)·[m₋ − d]₊², y = 1 for a same-label pair.

    Hadsell et al. have m₊ = 0 (positives pulled to distance 0) and a single margin m
    for the negatives; ``pos_margin`` generalises the first (positives closer than it
    are left alone).

    Args:
        pos_margin: m₊ ≥ 0, positive pairs closer than this give no loss.
        neg_margin: m₋, negative pairs farther than this give no loss.

    Reduction: mean over all ordered pairs i ≠ j of the batch, d euclidean.
    A batch without a positive pair or without a negative pair gives a zero loss and a
    warning. ``stats``: ``active_fraction`` (pairs with non-zero loss), ``pos_dist``,
    ``neg_dist``.
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        super().__init__()
        if pos_margin < 0:
            raise ValueError("pos_margin must be >= 0")
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist = pairwise_distance(embeddings)
        with torch.no_grad():
            same = same_label(labels)
            n = len(labels)
            n_pairs = max(n * (n - 1), 1)
            # y = 1: [d − m₊]₊; y = 0: [m₋ − d]₊. The diagonal gives [0 − m₊]₊ = 0.
            hinge = torch.where(same, dist - self.pos_margin, self.neg_margin - dist).clamp_min_(0)
            loss = 0.5 * torch.dot(hinge.view(-1), hinge.view(-1)) / n_pairs  # ½·Σ hinge²
            grad = torch.where(same, hinge, -hinge).mul_(1.0 / n_pairs)  # ∂loss/∂d
            n_same, pos_sum, total, n_active = self._record(
                n_same=same.sum(),
                pos_sum=(dist * same).sum(),
                total=dist.sum(),
                n_active=torch.count_nonzero(hinge),
            )
        n_pos = n_same - n
        self.stats = {
            "active_fraction": n_active / n_pairs,
            "pos_dist": pos_sum / max(n_pos, 1),
            "neg_dist": (total - pos_sum) / max(n * n - n_same, 1),
        }
        if n_pos == 0 or n_same == n * n:
            return self._degenerate(embeddings)
        return with_gradient(loss, (dist, grad))
