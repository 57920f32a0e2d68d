"""Contrastive loss (Hadsell, Chopra, LeCun, CVPR 2006, "Dimensionality Reduction by Learning an Invariant Mapping")."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import distance_matrix, same_label
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
        dist, pullback = distance_matrix(embeddings)
        with torch.no_grad():
            y = same_label(labels, dist.dtype)  # y = 1.0 for same-label pairs, else 0.0
            n = len(labels)
            n_same = int(y.sum())
            n_pairs = max(n * (n - 1), 1)
            # y = 1: [d − m₊]₊, y = 0: [m₋ − d]₊, i.e. [s·(d − c)]₊ with the sign s = 2y − 1
            # and c = m₋ − (m₋ − m₊)·y. The diagonal gives [0 − m₊]₊ = 0.
            sign = torch.rsub(y, -1.0, alpha=-2.0)  # 2y − 1
            c = torch.rsub(y, self.neg_margin, alpha=self.neg_margin - self.pos_margin)
            hinge = torch.sub(dist, c).mul_(sign).clamp_min_(0.0)
            loss = torch.dot(hinge.view(-1), hinge.view(-1)).mul_(0.5 / n_pairs)  # ½·Σ hinge²
            grad = hinge.mul(sign).mul_(1.0 / n_pairs)  # ∂loss/∂d = s·hinge / pairs

        def stats() -> dict[str, float]:
            pos_sum, total, n_active = self._record(
                pos_sum=torch.dot(dist.view(-1), y.view(-1)),
                total=dist.sum(),
                n_active=torch.count_nonzero(hinge),
            )
            return {
                "active_fraction": n_active / n_pairs,
                "pos_dist": pos_sum / max(n_same - n, 1),
                "neg_dist": (total - pos_sum) / max(n * n - n_same, 1),
            }

        self._defer_stats(stats)
        if n_same == n or n_same == n * n:
            return self._degenerate(embeddings)
        return with_gradient(loss, (embeddings, lambda: pullback(grad, symmetric=True)))
