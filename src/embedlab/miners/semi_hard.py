"""Semi-hard negative mining (FaceNet, Schroff, Kalenichenko, Philbin 2015)."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection, positive_pairs


class SemiHardMiner(TripletMiner):
    """For every anchor–positive pair, the closest negative farther than the positive.

    n* = argmin_n { d(a, n) : y_n ≠ y_a, d(a, n) > d(a, p) }; when no negative is
    farther than the positive, the hardest (closest) negative is used instead. One row
    per anchor–positive pair; a pair whose anchor has no negative is invalid.
    """

    @torch.no_grad()
    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        positive, negative = label_masks(labels)
        anchor, pos = positive_pairs(positive)
        rows, neg = dist[anchor], negative[anchor]
        neg_rows = torch.where(neg, rows, torch.inf)
        farther = neg & (rows > dist[anchor, pos][:, None])
        semi_hard = torch.where(farther, neg_rows, torch.inf).argmin(1)
        hardest = neg_rows.argmin(1)
        chosen = torch.where(farther.any(1), semi_hard, hardest)
        return TripletSelection(anchor, pos, chosen, neg.any(1))
