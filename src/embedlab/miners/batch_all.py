"""Batch-all mining (Hermans, Beyer, Leibe 2017): every valid triplet of the batch."""

from __future__ import annotations

from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection, positive_pairs


class BatchAllMiner(TripletMiner):
    """All triplets (a, p, n) with y_a = y_p, a ≠ p, y_n ≠ y_a.

    One row per anchor–positive pair: ``pos_dist`` is [R, 1], ``neg_dist`` the whole
    distance row of the anchor [R, N], ``valid`` marks its negatives. Nothing is
    gathered into triplet lists: the loss works on the dense [R, N] block.
    """

    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        positive, negative = label_masks(labels)
        anchor, pos = positive_pairs(positive)
        return TripletSelection(anchor, dist[anchor, pos][:, None], dist[anchor], negative[anchor])
