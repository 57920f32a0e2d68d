"""Batch-hard mining (TriHard; Hermans, Beyer, Leibe 2017, "In Defense of the Triplet Loss")."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import same_label
from embedlab.miners.base import TripletMiner, TripletSelection


class BatchHardMiner(TripletMiner):
    """For every anchor, its farthest positive and its closest negative.

    One row per anchor: p = argmax_{y_p = y_a, p ≠ a} d(a, p), n = argmin_{y_n ≠ y_a} d(a, n).
    An anchor without a positive or without a negative in the batch is invalid.
    """

    @torch.no_grad()
    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        n = len(labels)
        same = same_label(labels, dist.dtype)  # 1.0 where labels match
        big = torch.finfo(dist.dtype).max
        # positives keep their distance (exactly), negatives and the anchor itself become −1
        d_ap, positive = torch.addcmul(same - 1.0, dist, same).fill_diagonal_(-1.0).max(1)
        # same-label entries (the anchor included) are pushed to the largest finite value
        d_an, negative = torch.add(dist, same, alpha=big).min(1)
        valid = (d_ap >= 0) & (d_an < big)  # has a positive and a negative
        anchor = torch.arange(n, device=dist.device)
        d_ap, d_an = d_ap.mul_(valid), d_an.mul_(valid)  # 0 on invalid rows, not −1 or max
        return TripletSelection(anchor, positive, negative, valid, d_ap, d_an)
