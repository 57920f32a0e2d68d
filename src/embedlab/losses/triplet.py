"""Triplet loss (FaceNet, Schroff et al. 2015; batch-hard / soft margin, Hermans et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import distance_matrix
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
        dist, pullback = distance_matrix(embeddings)
        with torch.no_grad():
            sel = self.miner(dist, labels, embeddings.shape[1])
            d_ap, d_an = sel.distances(dist)
            # FaceNet compares squared distances, Hermans et al. plain ones
            ap, an = (d_ap**2, d_an**2) if self.squared else (d_ap, d_an)
            if self.soft_margin:
                terms = F.softplus(ap - an)  # ln(1 + exp(d(a,p) − d(a,n)))
                slope = torch.sigmoid(ap - an)  # its derivative
            else:
                terms = torch.sub(ap, an).add_(self.margin).relu_()  # [m + d(a,p) − d(a,n)]₊
                slope = terms.sign()  # its derivative: 1 where active, else 0
            active = terms > 0 if self.soft_margin else slope
            count = self._masked_stats(
                sel.valid, active_fraction=active, pos_dist=d_ap, neg_dist=d_an
            )
            if count == 0:
                return self._degenerate(embeddings)
            mask = sel.valid & (terms > 0) if self.nonzero_mean else sel.valid
            n_terms = max(int(mask.sum()) if self.nonzero_mean else count, 1)
            w = mask.to(terms.dtype).div_(n_terms)  # each averaged term weighs 1/n
            loss = torch.dot(terms.reshape(-1), w.reshape(-1))
            g = w.mul_(slope)  # ∂loss/∂term · ∂term/∂(ap − an)
            # ∂loss/∂d(a,p) = g·∂ap/∂d(a,p), ∂loss/∂d(a,n) = −g·∂an/∂d(a,n)
            g_ap, g_an = (2 * d_ap * g, -2 * d_an * g) if self.squared else (g, -g)
            grad = sel.scatter(g_ap, g_an, len(labels))
        return with_gradient(loss, (embeddings, lambda: pullback(grad)))
