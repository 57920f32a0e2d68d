"""Margin sample mining loss, MSML (Xiao, Luo, Jiang et al. 2017, arXiv:1710.00478)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import distance_matrix, same_label
from embedlab.losses.base import MetricLoss, with_gradient


class MSMLLoss(MetricLoss):
    """L = [max_{a,p} d(a, p) − min_{m,n} d(m, n) + α]₊, one term for the whole batch.

    The hardest positive pair (the farthest same-identity pair) against the hardest
    negative pair (the closest different-identity pair), anywhere in the batch; the
    two pairs need not share a sample. The authors apply it to L2-normalised features
    with euclidean distance: normalising is the model's job.

    Args:
        margin: α, the gap wanted between the two pairs (0.6 in the authors' code).

    A batch without a positive pair or without a negative pair gives a zero loss and a
    warning. ``stats``: ``active_fraction`` (0 or 1), ``pos_dist``, ``neg_dist``.
    """

    def __init__(self, margin: float = 0.6) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist, pullback = distance_matrix(embeddings)
        with torch.no_grad():
            same = same_label(labels)
            pos = torch.where(same, dist, -1.0)
            pos.fill_diagonal_(-1.0)
            d_pos, i_pos = pos.view(-1).max(0)  # the farthest positive pair
            d_neg, i_neg = torch.where(same, torch.inf, dist).view(-1).min(0)  # closest negative
            loss = F.relu(d_pos - d_neg + self.margin)
            n_same, d_p, d_n, active = self._record(
                n_same=same.sum(), d_pos=d_pos, d_neg=d_neg, active=loss > 0
            )
            grad = torch.zeros_like(dist).view(-1)
            grad[i_pos] += active
            grad[i_neg] -= active
        n = len(labels)
        if n_same == n or n_same == n * n:
            self.stats = {"active_fraction": 0.0, "pos_dist": 0.0, "neg_dist": 0.0}
            return self._degenerate(embeddings)
        self.stats = {"active_fraction": active, "pos_dist": d_p, "neg_dist": d_n}
        return with_gradient(loss, (embeddings, lambda: pullback(grad.view_as(dist))))
