"""Margin loss (Wu, Manmatha, Smola, Krähenbühl, ICCV 2017, "Sampling Matters in Deep Embedding Learning")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distances import pairwise_distance
from embedlab.losses.base import MetricLoss
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
        dist = pairwise_distance(embeddings)
        sel = self.miner(dist.detach(), labels, embeddings.shape[1])
        d_ap, d_an = sel.distances(dist)
        beta = self.beta[labels[sel.anchor]] if self.num_classes else self.beta
        beta = beta.reshape(-1, *[1] * (sel.valid.dim() - 1)).to(dist.dtype)
        pull = F.relu(self.margin + d_ap - beta)
        push = F.relu(self.margin - d_an + beta)
        count = self._masked_stats(
            sel.valid,
            active_fraction=((pull > 0).float() + (push > 0).float()) / 2,
            pos_dist=d_ap,
            neg_dist=d_an,
            beta=beta,
        )
        if count == 0:
            return self._degenerate(embeddings)
        n_active = round(2 * count * self.stats["active_fraction"])
        terms = (pull + push + self.nu * beta).expand(sel.valid.shape)
        return self._mean_over(terms, sel.valid, n_active)
