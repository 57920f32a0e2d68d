"""Batch-hard mining (TriHard; Hermans, Beyer, Leibe 2017, "In Defense of the Triplet Loss")."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import same_label
from embedlab.miners.base import TripletMiner, TripletSelection


class BatchHardMiner(TripletMiner):
    """For every anchor, its farthest positive and its closest negative.

    One row per anchor: ``pos_dist[a] = max_p d(a, p)``, ``neg_dist[a] = min_n d(a, n)``.
    An anchor without a positive or without a negative in the batch is invalid.
    """

    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        same = same_label(labels)
        count = same.sum(1)
        valid = (count > 1) & (count < len(labels))
        # d(a, a) = 0 never exceeds a positive distance, so the diagonal can stay in.
        hardest_pos = torch.where(same, dist, 0.0).max(1).values
        hardest_neg = torch.where(same, torch.inf, dist).min(1).values
        hardest_neg = torch.where(valid, hardest_neg, 0.0)
        anchor = torch.arange(len(labels), device=dist.device)
        return TripletSelection(anchor, hardest_pos, hardest_neg, valid)
