"""Margin loss (Wu, Manmatha, Smola, Krähenbühl, ICCV 2017, "Sampling Matters in Deep Embedding Learning")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distances import pairwise_distance, upcast
from embedlab.losses.base import MetricLoss, masked_mean
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
        beta = self.beta[labels] if self.num_classes else self.beta[0].expand(len(labels))
        beta = upcast(beta)[:, None]  # β of each anchor, [N, 1]
        pull = F.relu(self.margin + (d_ap - beta))  # y = +1: [α + d(a,p) − β]₊
        push = F.relu(self.margin - (d_an - beta))  # y = −1: [α − d(a,n) + β]₊
        valid = sel.valid.to(dist.dtype)
        if sel.negatives is None:  # one (pull, push) per triplet
            per_slot = (pull + push + self.nu * beta) * valid
            n_active = ((pull > 0) * valid).sum() + ((push > 0) * valid).sum()
        else:  # batch-all: each pull repeats once per negative, each push once per positive
            negatives = sel.negatives.to(dist.dtype)
            n_neg, n_pos = negatives.sum(1, keepdim=True), valid.sum(1, keepdim=True)
            per_slot = (pull + self.nu * beta) * valid * n_neg + push * negatives * n_pos
            n_active = ((pull > 0) * valid * n_neg).sum() + ((push > 0) * negatives * n_pos).sum()
        count = sel.count()
        loss = per_slot.sum() / n_active.clamp_min(1)

        def stats() -> dict[str, Tensor]:
            negatives = sel.valid if sel.negatives is None else sel.negatives
            return {
                "active_fraction": n_active / (2 * count).clamp_min(1),
                "pos_dist": masked_mean(d_ap, sel.valid),
                "neg_dist": masked_mean(d_an, negatives),
                "beta": masked_mean(beta.expand_as(d_ap), sel.valid),
            }

        self._keep_stats(stats, count)
        return loss
