"""Improved triplet loss (Cheng, Gong, Zhou, Wang, Zheng, CVPR 2016), in its general weighted form."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import pairwise_distance
from embedlab.losses.base import MetricLoss, masked_mean
from embedlab.miners import BatchHardMiner, TripletMiner
from embedlab.miners.base import hinge_sum


class ImprovedTripletLoss(MetricLoss):
    """ℓ(a, p, n) = [λ·D(a,p) − β·D(a,n) + α]₊ + γ·[D(a,p) − τ]₊, D = d² (or d).

    The first term is the triplet hinge with separately weighted distances; the second is
    Cheng et al.'s intra-class term, which also bounds the absolute anchor–positive
    distance. The defaults are Cheng et al.'s loss as third-party code sets it up: the
    squared euclidean distance in both terms, λ = β = 1, α = 1 (τ1 = −1), γ = 0.002 (the
    paper's β) and τ = τ2 = 0.01, i.e. [1 + d(a,p)² − d(a,n)²]₊ + 0.002·[d(a,p)² − 0.01]₊.

    The paper writes each term as a clamp, max{d(a,p)² − d(a,n)², τ1} + β·max{d(a,p)², τ2},
    which is the formula above plus the constant τ1 + β·τ2. A constant has no gradient;
    the value returned here is the hinge form, without it, so a triplet that satisfies both
    constraints costs exactly 0.

    Args:
        margin: α, the margin of the triplet term (1.0 = −τ1).
        pos_weight: λ, weight of the anchor–positive distance (1).
        neg_weight: β, weight of the anchor–negative distance (1).
        intra_weight: γ, weight of the intra-class term (Cheng et al.'s β = 0.002; 0
            leaves the plain weighted triplet hinge).
        intra_margin: τ, anchor–positive distances D below it are free (τ2 = 0.01).
        squared: D = d² (the paper) or D = d.
        miner: triplet selection, ``BatchHardMiner()`` by default.

    Reduction: mean over the miner's valid triplets. No valid triplet: zero loss (and a
    warning when ``stats`` are read). ``stats``: ``active_fraction``, ``pos_dist``,
    ``neg_dist`` (plain euclidean).
    """

    def __init__(
        self,
        margin: float = 1.0,
        pos_weight: float = 1.0,
        neg_weight: float = 1.0,
        intra_weight: float = 0.002,
        intra_margin: float = 0.01,
        squared: bool = True,
        miner: TripletMiner | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.pos_weight = pos_weight
        self.neg_weight = neg_weight
        self.intra_weight = intra_weight
        self.intra_margin = intra_margin
        self.squared = squared
        self.miner = miner if miner is not None else BatchHardMiner()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist = pairwise_distance(embeddings)
        sel = self.miner(dist.detach(), labels, embeddings.shape[1])
        d_ap, d_an = sel.distances(dist)
        ap, an = (d_ap**2, d_an**2) if self.squared else (d_ap, d_an)
        intra = self.intra_weight * F.relu(ap - self.intra_margin)  # γ·[D(a,p) − τ]₊
        u = self.pos_weight * ap + self.margin
        if sel.negatives is None:
            triplet = F.relu(u - self.neg_weight * an)  # [λ·D(a,p) − β·D(a,n) + α]₊
            per_slot, active = triplet + intra, (triplet + intra) > 0
        else:  # batch-all: summed over the anchor's negatives
            triplet, hinge_active = hinge_sum(u, self.neg_weight * an, sel.negatives)
            n_neg: Tensor = sel.negatives.sum(1, keepdim=True)
            per_slot = triplet + intra * n_neg
            active = hinge_active.where(intra == 0, n_neg)
        count = sel.count()
        loss = (per_slot * sel.valid).sum() / count.clamp_min(1)

        def stats() -> dict[str, Tensor]:
            negatives = sel.valid if sel.negatives is None else sel.negatives
            return {
                "active_fraction": (active * sel.valid).sum() / count.clamp_min(1),
                "pos_dist": masked_mean(d_ap, sel.valid),
                "neg_dist": masked_mean(d_an, negatives),
            }

        self._keep_stats(stats, count)
        return loss
