"""Ranked list loss (Wang, Hua, Kodirov, Hu, Garnier, Robertson, CVPR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import pairwise_distance, same_label
from embedlab.losses.base import MetricLoss


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
        dist = pairwise_distance(embeddings)
        same = same_label(labels)
        pos_bound = self.boundary - self.margin
        hard_pos = same & (dist > pos_bound)
        hard_pos.fill_diagonal_(False)
        loss_p = torch.where(hard_pos, dist - pos_bound, 0.0).sum(1) / hard_pos.sum(1).clamp_min(1)
        hard_neg = ~same & (dist < self.boundary)
        logits = torch.where(hard_neg, self.temperature * (self.boundary - dist), -torch.inf)
        logits = torch.where(hard_neg.any(1, keepdim=True), logits, 0.0)  # keep empty rows finite
        weights = torch.softmax(logits, dim=1)
        loss_n = torch.where(hard_neg, weights * (self.boundary - dist), 0.0).sum(1)
        with torch.no_grad():
            n_same, pos_sum, total, n_hard = self._record(
                n_same=same.sum(),
                pos_sum=(dist * same).sum(),
                total=dist.sum(),
                n_hard=hard_pos.sum() + hard_neg.sum(),
            )
        n = len(labels)
        n_pos, n_neg = n_same - n, n * n - n_same
        self.stats = {
            "active_fraction": n_hard / max(n * (n - 1), 1),
            "pos_dist": pos_sum / max(n_pos, 1),
            "neg_dist": (total - pos_sum) / max(n_neg, 1),
        }
        if n_pos == 0 or n_neg == 0:
            return self._degenerate(embeddings)
        return (loss_p + self.neg_weight * loss_n).mean()
