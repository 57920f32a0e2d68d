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
        same = same_label(labels)
        count = same.sum(1)
        valid = (count > 1) & (count < len(labels))
        pos_dist = torch.where(same, dist, -1.0)
        pos_dist.fill_diagonal_(-1.0)
        positive = pos_dist.argmax(1)
        negative = torch.where(same, torch.inf, dist).argmin(1)
        anchor = torch.arange(len(labels), device=dist.device)
        return TripletSelection(anchor, positive, negative, valid)
