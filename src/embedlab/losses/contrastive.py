"""Contrastive loss (Hadsell, Chopra, LeCun, CVPR 2006, "Dimensionality Reduction by Learning an Invariant Mapping")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import label_masks, pairwise_distance
from embedlab.losses.base import MetricLoss, masked_mean


class ContrastiveLoss(MetricLoss):
    """ℓ(i, j) = ½·y·[d − m₊]₊² + ½·(1 − y)·[m₋ − d]₊², y = 1 for a same-label pair.

    Hadsell et al. have m₊ = 0 (positives pulled to distance 0) and a single margin m for
    the negatives; ``pos_margin`` generalises the first (positives closer than it are left
    alone).

    Args:
        pos_margin: m₊ ≥ 0, positive pairs closer than this give no loss.
        neg_margin: m₋, negative pairs farther than this give no loss (1.0).

    Reduction: mean over all ordered pairs i ≠ j of the batch, d euclidean. A batch without
    a positive pair or without a negative pair gives a zero loss (and a warning when
    ``stats`` are read). ``stats``: ``active_fraction`` (pairs with non-zero loss),
    ``pos_dist``, ``neg_dist``.
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        super().__init__()
        if pos_margin < 0:
            raise ValueError("ContrastiveLoss: pos_margin must be >= 0")
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        d = pairwise_distance(embeddings)
        positive, negative = label_masks(labels)
        pull = F.relu(d - self.pos_margin).square() * positive  # y·[d − m₊]₊²
        push = F.relu(self.neg_margin - d).square() * negative  # (1 − y)·[m₋ − d]₊²
        n = len(labels)
        n_pairs = max(n * (n - 1), 1)
        usable = positive.any() & negative.any()
        loss = 0.5 * (pull + push).sum() / n_pairs * usable

        def stats() -> dict[str, Tensor]:
            return {
                "active_fraction": ((pull + push) > 0).sum() / n_pairs,
                "pos_dist": masked_mean(d, positive),
                "neg_dist": masked_mean(d, negative),
            }

        self._keep_stats(stats, usable)
        return loss
