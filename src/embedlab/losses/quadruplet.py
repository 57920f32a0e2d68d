"""Quadruplet loss (Chen, Chen, Zhang, Huang, CVPR 2017, "Beyond Triplet Loss")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import pairwise_distance, same_label
from embedlab.losses.base import MetricLoss


class QuadrupletLoss(MetricLoss):
    """ℓ(a) = [d(a,p)² − d(a,n)² + α1]₊ + [d(a,p)² − d(l,k)² + α2]₊, batch-hard mined.

    Per anchor a: p its farthest positive, n its closest negative, and (l, k) the
    closest pair of the batch with y_l ≠ y_k, y_l ≠ y_a, y_k ≠ y_a. The second term
    pushes negative pairs apart in absolute terms, not only relative to a's positives.
    d is euclidean, so d² are squared euclidean distances.

    Args:
        margin1: α1 of the anchor–negative term (α1 > α2; 1.0 in the paper's code).
        margin2: α2 of the negative-pair term (0.5).
        adaptive: use the paper's adaptive margins α = w·(μ_neg − μ_pos), with μ the
            batch means of the squared distances over all positive and all negative
            pairs (constants in the backward pass); ``margin1``/``margin2`` are then
            the weights w (paper: 1 and 0.5).

    Reduction: mean over anchors that have a positive and a negative. With fewer than
    three identities in the batch there is no (l, k) pair and the second term is 0.
    No valid anchor: zero loss and a warning. ``stats``: ``active_fraction``,
    ``pos_dist``, ``neg_dist``, ``neg_pair_dist`` (squared distances).
    """

    def __init__(self, margin1: float = 1.0, margin2: float = 0.5, adaptive: bool = False) -> None:
        super().__init__()
        self.margin1 = margin1
        self.margin2 = margin2
        self.adaptive = adaptive

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        sq = pairwise_distance(embeddings, metric="squared_euclidean")
        same = same_label(labels)
        count = same.sum(1)
        valid = (count > 1) & (count < len(labels))
        d_ap = torch.where(same, sq, 0.0).max(1).values
        neg_sq = torch.where(same, torch.inf, sq)
        d_an, nearest = neg_sq.min(1)
        # Closest negative pair avoiding the anchor's identity: the global closest pair
        # (identities c1, c2) serves every anchor outside c1 and c2; redo the min for those two.
        row = d_an.argmin()
        d_lk = d_an[row].expand(len(labels))
        for c in (labels[row], labels[nearest[row]]):
            keep = labels != c
            d_c = torch.where(keep[:, None] & keep[None, :], neg_sq, torch.inf).min()
            d_lk = torch.where(labels == c, d_c, d_lk)
        has_pair = valid & torch.isfinite(d_lk)
        d_an, d_lk = torch.where(valid, d_an, 0.0), torch.where(has_pair, d_lk, 0.0)
        alpha1: float | Tensor = self.margin1
        alpha2: float | Tensor = self.margin2
        if self.adaptive:
            with torch.no_grad():
                n_same, pos_sum, total = (same.sum(), (sq * same).sum(), sq.sum())
                n = len(labels)
                mu_pos = pos_sum / (n_same - n).clamp_min(1)
                mu_neg = (total - pos_sum) / (n * n - n_same).clamp_min(1)
            alpha1, alpha2 = self.margin1 * (mu_neg - mu_pos), self.margin2 * (mu_neg - mu_pos)
        terms = F.relu(d_ap - d_an + alpha1) + F.relu(d_ap - d_lk + alpha2) * has_pair
        num = self._masked_stats(
            valid, active_fraction=terms > 0, pos_dist=d_ap, neg_dist=d_an, neg_pair_dist=d_lk
        )
        if num == 0:
            return self._degenerate(embeddings)
        return self._mean_over(terms, valid, num)
