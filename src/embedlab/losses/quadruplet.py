"""Quadruplet loss (Chen, Chen, Zhang, Huang, CVPR 2017, "Beyond Triplet Loss")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import distance_matrix, same_label
from embedlab.losses.base import MetricLoss, with_gradient


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
        sq, pullback = distance_matrix(embeddings, "squared_euclidean")
        with torch.no_grad():
            n = len(labels)
            same = same_label(labels)
            count = same.sum(1)
            valid = (count > 1) & (count < n)
            pos_sq = torch.where(same, sq, -1.0)
            pos_sq.fill_diagonal_(-1.0)
            d_ap, p = pos_sq.max(1)  # hardest positive
            neg_sq = torch.where(same, torch.inf, sq)
            d_an, nearest = neg_sq.min(1)  # hardest negative
            # Closest pair (l, k), y_l ≠ y_k, avoiding the anchor's identity: the global
            # closest pair (identities c1, c2) serves every anchor outside c1 and c2; the
            # min is redone without c1, then without c2, for those anchors.
            row = d_an.argmin()
            pair_l, pair_k = row.expand(n), nearest[row].expand(n)
            d_lk = d_an[row].expand(n)
            for c in (labels[row], labels[nearest[row]]):
                keep = labels != c
                flat = torch.where(keep[:, None] & keep[None, :], neg_sq, torch.inf).view(-1)
                i = flat.argmin()
                mine = labels == c
                d_lk = torch.where(mine, flat[i], d_lk)
                pair_l = torch.where(mine, i // n, pair_l)
                pair_k = torch.where(mine, i % n, pair_k)
            has_pair = valid & torch.isfinite(d_lk)
            d_an, d_lk = torch.where(valid, d_an, 0.0), torch.where(has_pair, d_lk, 0.0)
            alpha1, alpha2 = self.margin1, self.margin2
            if self.adaptive:  # α = w·(μ_neg − μ_pos), batch means of squared distances
                n_same, pos_sum, total = self._record(
                    n_same=same.sum(), pos_sum=(sq * same).sum(), total=sq.sum()
                )
                gap = (total - pos_sum) / max(n * n - n_same, 1) - pos_sum / max(n_same - n, 1)
                alpha1, alpha2 = self.margin1 * gap, self.margin2 * gap
            term1 = F.relu(d_ap - d_an + alpha1)  # [d(a,p)² − d(a,n)² + α1]₊
            term2 = F.relu(d_ap - d_lk + alpha2) * has_pair  # [d(a,p)² − d(l,k)² + α2]₊
            terms = term1 + term2
            num = self._masked_stats(
                valid, active_fraction=terms > 0, pos_dist=d_ap, neg_dist=d_an, neg_pair_dist=d_lk
            )
            if num == 0:
                return self._degenerate(embeddings)
            loss = (terms * valid).sum() / num
            w1 = (valid & (term1 > 0)).to(sq.dtype) / num
            w2 = (valid & (term2 > 0)).to(sq.dtype) / num
            anchor = torch.arange(n, device=sq.device)
            grad = torch.zeros_like(sq).index_put_((anchor, p), w1 + w2, accumulate=True)
            grad.index_put_((anchor, nearest), -w1, accumulate=True)
            grad.index_put_((pair_l, pair_k), -w2, accumulate=True)
        return with_gradient(loss, (embeddings, lambda: pullback(grad)))
