"""Margin loss (Wu, Manmatha, Smola, Krähenbühl, ICCV 2017, "Sampling Matters in Deep Embedding Learning")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distances import distance_matrix
from embedlab.losses.base import MetricLoss, with_gradient
from embedlab.miners import DistanceWeightedMiner, TripletMiner


class MarginLoss(MetricLoss):
    """ℓ(i, j) = [α + y_ij·(d(i, j) − β)]₊, y = +1 for a positive pair, −1 for a negative.

    Every mined triplet (a, p, n) gives a positive term [α + d(a,p) − β]₊ and a
    negative term [α − d(a,n) + β]₊: pairs are pulled inside β − α and pushed beyond
    β + α. β is learnt (the paper's code gives it its own learning rate, 0.1: put
    ``beta`` in its own optimiser group), with the regulariser ν·β.

    Args:
        margin: α, half the width of the band around β (0.2).
        beta: initial β, the boundary between positive and negative distances (1.2).
        learn_beta: make β a trainable parameter.
        num_classes: if given, one β per class (the anchor's label indexes it; labels
            must lie in [0, num_classes)); else one global β.
        nu: ν, weight of the regulariser ν·Σβ (0 in the paper).
        miner: triplet selection, ``DistanceWeightedMiner()`` by default (which expects
            L2-normalised embeddings).

    Reduction, as in the authors' code: (Σ terms + ν·Σ β_a over the mined triplets)
    divided by the number of non-zero terms (at least 1). No valid triplet: zero loss
    and a warning. ``stats``: ``active_fraction`` (non-zero terms among the 2 per
    triplet), ``pos_dist``, ``neg_dist``, ``beta`` (mean β).
    """

    def __init__(
        self,
        margin: float = 0.2,
        beta: float = 1.2,
        learn_beta: bool = True,
        num_classes: int | None = None,
        nu: float = 0.0,
        miner: TripletMiner | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.learn_beta = learn_beta
        self.num_classes = num_classes
        self.nu = nu
        self.beta = nn.Parameter(torch.full((num_classes or 1,), float(beta)), learn_beta)
        self.miner = miner if miner is not None else DistanceWeightedMiner()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist, pullback = distance_matrix(embeddings)
        with torch.no_grad():
            sel = self.miner(dist, labels, embeddings.shape[1])
            d_ap, d_an = sel.distances(dist)
            cls = labels[sel.anchor] if self.num_classes else torch.zeros_like(sel.anchor)
            beta = self.beta[cls].reshape(-1, *[1] * (sel.valid.dim() - 1)).to(dist.dtype)
            pull = F.relu(self.margin + (d_ap - beta))  # y = +1
            push = F.relu(self.margin - (d_an - beta))  # y = −1
            pulls = ((pull > 0) & sel.valid).to(dist.dtype)
            pushes = ((push > 0) & sel.valid).to(dist.dtype)
            count = self._masked_stats(
                sel.valid,
                active_fraction=(pulls + pushes) / 2,
                pos_dist=d_ap,
                neg_dist=d_an,
                beta=beta,
            )
            if count == 0:
                return self._degenerate(embeddings)
            n_active = max(int((pulls + pushes).sum()), 1)
            terms = torch.where(sel.valid, pull + push + self.nu * beta, 0.0)
            loss = terms.sum() / n_active
            # ∂/∂d(a,p) = 1[pull > 0], ∂/∂d(a,n) = −1[push > 0], ∂/∂β = ν − 1[pull > 0] + 1[push > 0]
            grad = sel.scatter(pulls / n_active, -pushes / n_active, len(labels))
            g_beta = (self.nu * sel.valid - pulls + pushes) / n_active
            grad_beta = torch.zeros_like(self.beta).index_add_(
                0, cls, g_beta.reshape(len(cls), -1).sum(1).to(self.beta.dtype)
            )
        if not self.beta.requires_grad:
            return with_gradient(loss, (embeddings, lambda: pullback(grad)))
        return with_gradient(loss, (embeddings, lambda: pullback(grad)), (self.beta, grad_beta))
