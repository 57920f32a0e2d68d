"""Triplet loss (FaceNet, Schroff et al. 2015; batch-hard / soft margin, Hermans et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import pairwise_distance
from embedlab.losses.base import MetricLoss, with_gradient
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
        with torch.no_grad():
            sel = self.miner(dist, labels, embeddings.shape[1])
            d_ap, d_an = sel.distances(dist)
            # FaceNet compares squared distances, Hermans et al. plain ones
            ap, an = (d_ap**2, d_an**2) if self.squared else (d_ap, d_an)
            if self.soft_margin:
                terms = F.softplus(ap - an)  # ln(1 + exp(d(a,p) − d(a,n)))
                slope = torch.sigmoid(ap - an)  # its derivative
            else:
                terms = F.relu(self.margin + ap - an)  # [m + d(a,p) − d(a,n)]₊
                slope = (terms > 0).to(terms.dtype)
            active = terms > 0
            count = self._masked_stats(
                sel.valid, active_fraction=active, pos_dist=d_ap, neg_dist=d_an
            )
            if count == 0:
                return self._degenerate(embeddings)
            mask = sel.valid & active if self.nonzero_mean else sel.valid
            n_terms = max(float(mask.sum()) if self.nonzero_mean else count, 1.0)
            loss = (terms * mask).sum() / n_terms
            # ∂loss/∂d(a,p) = w·∂ap/∂d(a,p), ∂loss/∂d(a,n) = −w·∂an/∂d(a,n), w = mask·slope/n
            w = mask * slope / n_terms
            g_ap, g_an = (2 * d_ap * w, -2 * d_an * w) if self.squared else (w, -w)
            grad = sel.scatter(g_ap, g_an, len(labels))
        return with_gradient(loss, (dist, grad))
