"""Improved triplet loss (Cheng, Gong, Zhou, Wang, Zheng, CVPR 2016), in its general weighted form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import distance_matrix
from embedlab.losses.base import MetricLoss, with_gradient
from embedlab.miners import BatchHardMiner, TripletMiner


class ImprovedTripletLoss(MetricLoss):
    """ℓ(a, p, n) = [λ·d(a,p)² − β·d(a,n)² + α]₊ + γ·[d(a,p) − τ]₊.

    The first term is the triplet hinge with separately weighted squared distances;
    the second is Cheng et al.'s intra-class term, which also bounds the absolute
    anchor–positive distance (off by default).

    Args:
        margin: α, the margin of the triplet term (1.0).
        pos_weight: λ, weight of the squared anchor–positive distance.
        neg_weight: β, weight of the squared anchor–negative distance.
        intra_weight: γ, weight of the intra-class term (0 disables it; third-party
            settings of Cheng et al. use 0.002).
        intra_margin: τ, anchor–positive distances (plain euclidean) below it are free.
        miner: triplet selection, ``BatchHardMiner()`` by default.

    Reduction: mean over the miner's valid terms (anchors for batch-hard). No valid
    triplet: zero loss and a warning. ``stats``: ``active_fraction``, ``pos_dist``,
    ``neg_dist``.
    """

    def __init__(
        self,
        margin: float = 1.0,
        pos_weight: float = 1.0,
        neg_weight: float = 1.0,
        intra_weight: float = 0.0,
        intra_margin: float = 0.01,
        miner: TripletMiner | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.pos_weight = pos_weight
        self.neg_weight = neg_weight
        self.intra_weight = intra_weight
        self.intra_margin = intra_margin
        self.miner = miner if miner is not None else BatchHardMiner()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist, pullback = distance_matrix(embeddings)
        with torch.no_grad():
            sel = self.miner(dist, labels, embeddings.shape[1])
            d_ap, d_an = sel.distances(dist)
            # [λ·d(a,p)² − β·d(a,n)² + α]₊ + γ·[d(a,p) − τ]₊
            triplet = F.relu(self.pos_weight * d_ap**2 - self.neg_weight * d_an**2 + self.margin)
            intra = F.relu(d_ap - self.intra_margin)
            terms = triplet + self.intra_weight * intra
            count = self._masked_stats(
                sel.valid, active_fraction=terms > 0, pos_dist=d_ap, neg_dist=d_an
            )
            if count == 0:
                return self._degenerate(embeddings)
            loss = (terms * sel.valid).sum() / count
            w = sel.valid * (triplet > 0) / count
            g_ap = (
                2 * self.pos_weight * d_ap * w + self.intra_weight * sel.valid * (intra > 0) / count
            )
            g_an = -2 * self.neg_weight * d_an * w
            grad = sel.scatter(g_ap.expand(sel.valid.shape), g_an, len(labels))
        return with_gradient(loss, (embeddings, lambda: pullback(grad)))
