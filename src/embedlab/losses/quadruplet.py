"""Quadruplet loss (Chen, Chen, Zhang, Huang, CVPR 2017, "Beyond Triplet Loss")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import label_masks, pairwise_distance
from embedlab.losses.base import MetricLoss, masked_mean


class QuadrupletLoss(MetricLoss):
    """ℓ(a) = [d(a,p)² − d(a,n)² + α1]₊ + [d(a,p)² − d(l,k)² + α2]₊, batch-hard mined.

    Per anchor a: p its farthest positive, n its closest negative, and (l, k) the closest
    pair of the batch with y_l ≠ y_k, y_l ≠ y_a, y_k ≠ y_a. The second term pushes negative
    pairs apart in absolute terms, not only relative to a's positives.

    Args:
        margin1: α1 of the anchor–negative term (α1 > α2; 1.0 in the paper's code).
        margin2: α2 of the negative-pair term (0.5).
        adaptive: use the paper's adaptive margins α = w·(μ_neg − μ_pos), with μ the batch
            means of the squared distances over all positive and all negative pairs
            (constants in the backward pass, computed on the device in the input's dtype);
            ``margin1``/``margin2`` are then the weights w (paper: 1 and 0.5).

    Reduction: mean over anchors that have a positive and a negative. With fewer than three
    identities in the batch there is no (l, k) pair and the second term is 0. No valid
    anchor: zero loss (and a warning when ``stats`` are read). ``stats``:
    ``active_fraction``, ``pos_dist``, ``neg_dist``, ``neg_pair_dist`` (squared distances).
    """

    def __init__(self, margin1: float = 1.0, margin2: float = 0.5, adaptive: bool = False) -> None:
        super().__init__()
        self.margin1 = margin1
        self.margin2 = margin2
        self.adaptive = adaptive

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        sq = pairwise_distance(embeddings, distance="squared_euclidean")
        positive, negative = label_masks(labels)
        valid = positive.any(1) & negative.any(1)
        d_ap = sq.where(positive, 0.0).amax(1)  # hardest positive, d(a,p)²
        d_an = sq.where(negative, torch.inf).amin(1).where(valid, 0.0)  # hardest negative
        d_lk, has_pair = self._closest_foreign_pair(sq, labels, negative)
        has_pair = has_pair & valid
        d_lk = d_lk.where(has_pair, 0.0)
        alpha1: float | Tensor = self.margin1
        alpha2: float | Tensor = self.margin2
        if self.adaptive:  # α = w·(μ_neg − μ_pos), batch constants
            gap = (masked_mean(sq, negative) - masked_mean(sq, positive)).detach()
            alpha1, alpha2 = self.margin1 * gap, self.margin2 * gap
        term1 = F.relu(d_ap - d_an + alpha1)  # [d(a,p)² − d(a,n)² + α1]₊
        term2 = F.relu(d_ap - d_lk + alpha2) * has_pair  # [d(a,p)² − d(l,k)² + α2]₊
        terms = term1 + term2
        count = valid.sum()
        loss = (terms * valid).sum() / count.clamp_min(1)

        def stats() -> dict[str, Tensor]:
            return {
                "active_fraction": masked_mean((terms > 0).to(sq.dtype), valid),
                "pos_dist": masked_mean(d_ap, valid),
                "neg_dist": masked_mean(d_an, valid),
                "neg_pair_dist": masked_mean(d_lk, valid),
            }

        self._keep_stats(stats, count)
        return loss

    @staticmethod
    def _closest_foreign_pair(
        sq: Tensor, labels: Tensor, negative: Tensor
    ) -> tuple[Tensor, Tensor]:
        """min d(l, k)² over negative pairs avoiding each anchor's identity: [N], and whether one exists.

        The batch's closest negative pair (identities c1, c2) serves every anchor outside
        c1 and c2; for the anchors of c1 (and of c2) the min is taken again without c1
        (without c2). Three N×N minima instead of an N×N×N block.
        """
        n = len(labels)
        masked = sq.where(negative, torch.inf)
        d_lk = masked.amin().expand(n)
        with torch.no_grad():
            flat = masked.detach().argmin()
            pair = labels[torch.stack([flat // n, flat % n])]
        for c in pair:  # two fixed iterations
            keep = labels != c
            best = masked.where(keep[:, None] & keep[None, :], torch.inf).amin()
            d_lk = torch.where(labels == c, best, d_lk)
        exists = torch.isfinite(d_lk.detach())
        return d_lk.where(exists, 0.0), exists
