"""Ranked list loss (Wang, Hua, Kodirov, Hu, Garnier, Robertson, CVPR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import distance_matrix, same_label
from embedlab.losses.base import MetricLoss, with_gradient


class RankedListLoss(MetricLoss):
    """L(a) = L_P(a) + λ·L_N(a), from the pairwise L_m = (1−y)·[α − d]₊ + y·[d − (α − m)]₊.

    Positives should lie within α − m of the anchor, negatives beyond α, leaving a
    gap m between the two lists. Only non-trivial pairs count:

    * L_P(a) = mean over positives with d > α − m of (d − (α − m));
    * L_N(a) = Σ_n w_an·(α − d_an) over negatives with d < α, with
      w_an = exp(T·(α − d_an)) / Σ_n' exp(T·(α − d_an')) — a softmax over the
      anchor's non-trivial negatives, computed shifted by its maximum, so no overflow
      for large T (the weights stay differentiable).

    Args:
        boundary: α, the distance negatives must exceed (1.2).
        margin: m, the gap between positives' and negatives' boundaries (0.4).
        temperature: T, how strongly closer negatives are weighted (10).
        neg_weight: λ, weight of the negative part (1).

    Reduction: mean over all anchors; an anchor with no non-trivial pair contributes 0.
    A batch without a positive pair or without a negative pair gives a zero loss and
    a warning. ``stats``: ``active_fraction`` (non-trivial pairs), ``pos_dist``,
    ``neg_dist``.
    """

    def __init__(
        self,
        boundary: float = 1.2,
        margin: float = 0.4,
        temperature: float = 10.0,
        neg_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.boundary = boundary
        self.margin = margin
        self.temperature = temperature
        self.neg_weight = neg_weight

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist, pullback = distance_matrix(embeddings)
        with torch.no_grad():
            n = len(labels)
            same = same_label(labels)
            alpha, pos_bound, temp = self.boundary, self.boundary - self.margin, self.temperature
            hard_pos = same & (dist > pos_bound)
            hard_pos.fill_diagonal_(False)
            n_hard_pos = hard_pos.sum(1, keepdim=True).clamp_min(1)
            loss_p = torch.where(hard_pos, dist - pos_bound, 0.0).sum(1) / n_hard_pos[:, 0]
            hard_neg = ~same & (dist < alpha)
            logits = torch.where(hard_neg, temp * (alpha - dist), -torch.inf)
            logits = torch.where(hard_neg.any(1, keepdim=True), logits, 0.0)  # empty rows
            w = torch.softmax(logits, dim=1) * hard_neg  # exp(T(α − d)) / Σ exp(T(α − d'))
            loss_n = (w * (alpha - dist)).sum(1, keepdim=True)
            loss = (loss_p.sum() + self.neg_weight * loss_n.sum()) / n
            # ∂L_P/∂d = 1/|P*| on P*; ∂L_N/∂d_j = −w_j·(1 + T·((α − d_j) − L_N)), softmax included
            grad_n = -w * (1 + temp * ((alpha - dist) - loss_n))
            grad = (hard_pos / n_hard_pos + self.neg_weight * grad_n) / n
            n_same, pos_sum, total, n_hard = self._record(
                n_same=same.sum(),
                pos_sum=(dist * same).sum(),
                total=dist.sum(),
                n_hard=hard_pos.sum() + hard_neg.sum(),
            )
        n_pos, n_neg = n_same - n, n * n - n_same
        self.stats = {
            "active_fraction": n_hard / max(n * (n - 1), 1),
            "pos_dist": pos_sum / max(n_pos, 1),
            "neg_dist": (total - pos_sum) / max(n_neg, 1),
        }
        if n_pos == 0 or n_neg == 0:
            return self._degenerate(embeddings)
        return with_gradient(loss, (embeddings, lambda: pullback(grad)))
