"""Batch-hard mining (TriHard; Hermans, Beyer, Leibe 2017, "In Defense of the Triplet Loss")."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection


class BatchHardMiner(TripletMiner):
    """For every anchor, its farthest positive and its closest negative.

    One slot per anchor: p = argmax_{y_p = y_a, p ≠ a} d(a, p),
    n = argmin_{y_n ≠ y_a} d(a, n). An anchor without a positive or without a negative
    in the batch is invalid.
    """

    @torch.no_grad()
    def __call__(
        self,
        dist: Tensor,
        labels: Tensor,
        embedding_dim: int | None = None,
        ref_labels: Tensor | None = None,
    ) -> TripletSelection:
        positive, negative = label_masks(labels, ref_labels)
        hardest_p = torch.where(positive, dist, -1.0).argmax(1, keepdim=True)
        hardest_n = torch.where(negative, dist, torch.inf).argmin(1, keepdim=True)
        valid = positive.any(1, keepdim=True) & negative.any(1, keepdim=True)
        return TripletSelection(hardest_p, hardest_n, valid)
