"""Batch-hard mining (TriHard; Hermans, Beyer, Leibe 2017, "In Defense of the Triplet Loss")."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection


class BatchHardMiner(TripletMiner):
    """For every anchor, its farthest positive and its closest negative.

    One row per anchor: ``pos_dist[a] = max_p d(a, p)``, ``neg_dist[a] = min_n d(a, n)``.
    An anchor without a positive or without a negative in the batch is invalid.
    """

    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        positive, negative = label_masks(labels)
        valid = positive.any(1) & negative.any(1)
        zero = dist.new_zeros(())
        hardest_pos = torch.where(positive, dist, zero).max(1).values  # distances are >= 0
        hardest_neg = torch.where(negative, dist, torch.inf).min(1).values
        anchor = torch.arange(dist.shape[0], device=dist.device)
        return TripletSelection(
            anchor, hardest_pos, torch.where(valid, hardest_neg, zero), valid
        )
