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

    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        positive, negative = label_masks(labels)
        anchor, pos = positive_pairs(positive)
        d_ap = dist[anchor, pos]
        rows, neg = dist[anchor], negative[anchor]
        farther = neg & (rows > d_ap[:, None])
        semi_hard = torch.where(farther, rows, torch.inf).min(1).values
        hardest = torch.where(neg, rows, torch.inf).min(1).values
        valid = neg.any(1)
        d_an = torch.where(farther.any(1), semi_hard, hardest)
        return TripletSelection(anchor, d_ap, torch.where(valid, d_an, d_ap.new_zeros(())), valid)
