"""Ranked list loss (Wang, Hua, Kodirov, Hu, Garnier, Robertson, CVPR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks, pairwise_distance, references
from embedlab.losses.base import MetricLoss, masked_mean


class RankedListLoss(MetricLoss):
    """L(a) = L_P(a) + λ·L_N(a), from the pairwise L_m = (1−y)·[α − d]₊ + y·[d − (α − m)]₊.

    Positives should lie within α − m of the anchor, negatives beyond α, leaving a gap m
    between the two lists. Only non-trivial pairs count:

    * L_P(a) = mean over positives with d > α − m of (d − (α − m));
    * L_N(a) = Σ_n w_an·(α − d_an) over negatives with d < α, with
      w_an = exp(T·(α − d_an)) / Σ_n' exp(T·(α − d_an')), a softmax over the anchor's
      non-trivial negatives.

    Args:
        boundary: α, the distance negatives must exceed (1.2).
        margin: m, the gap between positives' and negatives' boundaries (0.4).
        temperature: T, how strongly closer negatives are weighted (10).
        neg_weight: λ, weight of the negative part (1).
        paper_gradient: ``True`` (the paper): the weights w_an are constants and, in the
            list of anchor a, the other samples are fixed, so only the anchor moves —
            d(x_a, x_j.detach()), softmax detached. ``False``: plain autograd through
            every distance and the weights.

    Reduction: mean over all anchors; an anchor with no non-trivial pair contributes 0. A
    batch without a positive pair or without a negative pair gives a zero loss (and a
    warning when ``stats`` are read). ``stats``: ``active_fraction`` (non-trivial pairs),
    ``pos_dist``, ``neg_dist``.

    ``ref_embeddings``/``ref_labels`` (e.g. from ``CrossBatchMemory``) add references: the
    columns of the distance matrix are the batch followed by them (without gradient).
    """

    def __init__(
        self,
        boundary: float = 1.2,
        margin: float = 0.4,
        temperature: float = 10.0,
        neg_weight: float = 1.0,
        paper_gradient: bool = True,
    ) -> None:
        super().__init__()
        self.boundary = boundary
        self.margin = margin
        self.temperature = temperature
        self.neg_weight = neg_weight
        self.paper_gradient = paper_gradient

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        refs = references(embeddings, ref_embeddings)
        if self.paper_gradient:  # the others are fixed in each anchor's list
            refs = (embeddings if refs is None else refs).detach()
        d = pairwise_distance(embeddings, refs)  # row a: the list of anchor a
        positive, negative = label_masks(labels, ref_labels)
        alpha, pos_bound = self.boundary, self.boundary - self.margin
        hard_pos = positive & (d > pos_bound)
        hard_neg = negative & (d < alpha)
        loss_p = (d - pos_bound).where(hard_pos, 0.0).sum(1) / hard_pos.sum(1).clamp_min(1)
        logits = (self.temperature * (alpha - d)).where(hard_neg, -torch.inf)
        logits = logits.where(hard_neg.any(1, keepdim=True), 0.0)  # rows without any
        w = torch.softmax(logits.detach() if self.paper_gradient else logits, dim=1) * hard_neg
        loss_n = (w * (alpha - d)).sum(1)
        usable = positive.any() & negative.any()
        loss = (loss_p + self.neg_weight * loss_n).mean() * usable

        def stats() -> dict[str, Tensor]:
            n, m = d.shape
            return {
                "active_fraction": (hard_pos.sum() + hard_neg.sum()) / max(n * (m - 1), 1),
                "pos_dist": masked_mean(d, positive),
                "neg_dist": masked_mean(d, negative),
            }

        self._keep_stats(stats, usable)
        return loss
