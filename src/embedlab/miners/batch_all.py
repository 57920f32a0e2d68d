"""Batch-all mining (Hermans, Beyer, Leibe 2017): every valid triplet of the batch."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection, positive_pairs


class BatchAllMiner(TripletMiner):
    """All triplets (a, p, n) with y_a = y_p, a ≠ p, y_n ≠ y_a.

    One row per anchor–positive pair, with ``negative=None``: the loss takes the
    anchor's whole distance row, a dense [R, N] block whose ``valid`` mask marks the
    negatives. Nothing is gathered into triplet lists.
    """

    @torch.no_grad()
    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        positive, negative = label_masks(labels)
        anchor, pos = positive_pairs(positive)
        return TripletSelection(anchor, pos, None, negative[anchor])
