"""Triplet loss (FaceNet, Schroff et al. 2015; batch-hard / soft margin, Hermans et al. 2017)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import pairwise_distance
from embedlab.losses.base import MetricLoss
from embedlab.miners import BatchHardMiner, TripletMiner


class TripletLoss(MetricLoss):
    """ℓ(a, p, n) = [m + d(a, p) − d(a, n)]₊, or ln(1 + exp(d(a, p) − d(a, n))) with a soft margin.

    Args:
        margin: m, the gap wanted between negative and positive distances (Hermans: 0.3
            on plain euclidean; FaceNet: α = 0.2 on squared distances of L2-normalised
            embeddings). Ignored when ``soft_margin``.
        miner: which triplets: ``BatchHardMiner()`` (default; one term per anchor),
            ``SemiHardMiner()`` (one per anchor–positive pair), ``BatchAllMiner()``
            (every valid triplet), ``DistanceWeightedMiner()``.
        squared: use squared euclidean distances d² (FaceNet) instead of d (Hermans).
        soft_margin: replace the hinge by softplus (Hermans et al.); then every term is
            active and ``nonzero_mean`` changes nothing.
        nonzero_mean: average over the terms with non-zero loss only (Hermans et al.
            recommend it for batch-all) instead of over all valid terms.

    Returns the mean over the miner's valid terms. A batch with no valid triplet gives a
    zero loss and a warning. ``stats``: ``active_fraction``, ``pos_dist``, ``neg_dist``.
    """

    def __init__(
        self,
        margin: float = 0.3,
        miner: TripletMiner | None = None,
        squared: bool = False,
        soft_margin: bool = False,
        nonzero_mean: bool = False,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.miner = miner if miner is not None else BatchHardMiner()
        self.squared = squared
        self.soft_margin = soft_margin
        self.nonzero_mean = nonzero_mean

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist = pairwise_distance(embeddings)
        sel = self.miner(dist.detach(), labels, embeddings.shape[1])
        d_ap, d_an = sel.distances(dist)
        if self.squared:
            ap, an = d_ap.pow(2), d_an.pow(2)  # FaceNet: ‖a − p‖² − ‖a − n‖²
        else:
            ap, an = d_ap, d_an
        terms = F.softplus(ap - an) if self.soft_margin else F.relu(self.margin + ap - an)
        active = terms > 0
        count = self._masked_stats(sel.valid, active_fraction=active, pos_dist=d_ap, neg_dist=d_an)
        if count == 0:
            return self._degenerate(embeddings)
        if self.nonzero_mean:
            n_active = round(self.stats["active_fraction"] * count)
            return self._mean_over(terms, sel.valid & active, n_active)
        return self._mean_over(terms, sel.valid, count)
