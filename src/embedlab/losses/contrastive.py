"""Contrastive losses: Hadsell, Chopra, LeCun (CVPR 2006, "Dimensionality Reduction by Learning
an Invariant Mapping") on distances, and the cosine-similarity form of the XBM paper (CVPR 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import (
    cosine_similarity,
    label_masks,
    pairwise_distance,
    references,
    same_label,
)
from embedlab.losses.base import MetricLoss, masked_mean


class ContrastiveLoss(MetricLoss):
    """ℓ(i, j) = ½·y·[d − m₊]₊² + ½·(1 − y)·[m₋ − d]₊², y = 1 for a same-label pair.

    Hadsell et al. have m₊ = 0 (positives pulled to distance 0) and a single margin m for
    the negatives; ``pos_margin`` generalises the first (positives closer than it are left
    alone).

    Args:
        pos_margin: m₊ ≥ 0, positive pairs closer than this give no loss.
        neg_margin: m₋, negative pairs farther than this give no loss (1.0).

    Reduction: mean over all ordered pairs i ≠ j of the batch, d euclidean. A batch without
    a positive pair or without a negative pair gives a zero loss (and a warning when
    ``stats`` are read). ``stats``: ``active_fraction`` (pairs with non-zero loss),
    ``pos_dist``, ``neg_dist``.

    ``ref_embeddings``/``ref_labels`` (e.g. from ``CrossBatchMemory``) add references: the
    columns of the distance matrix are the batch followed by them (without gradient).
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        super().__init__()
        if pos_margin < 0:
            raise ValueError("ContrastiveLoss: pos_margin must be >= 0")
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        d = pairwise_distance(embeddings, references(embeddings, ref_embeddings))
        # y = 1: [d − m₊]₊, y = 0: [m₋ − d]₊; both are [s·(d − c)]₊ with s = 2y − 1 and
        # c = m₋ − (m₋ − m₊)·y (the diagonal gives [0 − m₊]₊ = 0)
        y = same_label(labels, d.dtype, ref_labels)
        sign, centre = 2 * y - 1, self.neg_margin - (self.neg_margin - self.pos_margin) * y
        hinge = F.relu(sign * (d - centre))
        n = len(labels)
        n_pairs = max(n * (d.shape[1] - 1), 1)
        n_same = y.sum()  # the diagonal included
        usable = (n_same > n) & (n_same < n * d.shape[1])  # a positive pair and a negative pair
        loss = 0.5 * hinge.square().sum() / n_pairs * usable

        def stats() -> dict[str, Tensor]:
            positive, negative = label_masks(labels, ref_labels)
            return {
                "active_fraction": (hinge > 0).sum() / n_pairs,
                "pos_dist": masked_mean(d, positive),
                "neg_dist": masked_mean(d, negative),
            }

        self._keep_stats(stats, usable)
        return loss


class CosineContrastiveLoss(MetricLoss):
    """L = 1/N·Σ_i Σ_{j≠i} { y_ij·[m₊ − S_ij]₊ + (1 − y_ij)·S_ij·[S_ij > m₋] }.

    The contrastive loss of the cross-batch memory paper (Wang, Zhang, Huang, Scott,
    CVPR 2020) and its code (``ret_benchmark/losses/contrastive_loss.py``): S are cosine
    similarities, y_ij = 1 for a same-label pair. A positive pair costs its distance to
    similarity m₊ (1: every positive pair is pulled); a negative pair more similar than m₋
    costs its similarity itself, not its excess over m₋ (the gradient is the same as a hinge
    [S − m₋]₊'s, the value larger by m₋ per active negative).

    Args:
        pos_margin: m₊, positive pairs at least this similar give no loss (1.0).
        neg_margin: m₋, negative pairs at most this similar give no loss (0.5).

    Reduction: the sum over all pairs (i, j), i an anchor of the batch, divided by the
    number N of anchors, not of pairs: references that contribute nothing (easy negatives of
    a large memory) do not dilute the loss. The authors' code drops positive pairs with
    S ≥ 1 − 1e-5 to skip each anchor's own copy; here the pair (i, i) is masked instead.
    ``stats``: ``active_fraction`` (pairs with non-zero loss), ``pos_sim``, ``neg_sim``.

    ``ref_embeddings``/``ref_labels`` (e.g. from ``CrossBatchMemory``) add references: the
    columns of the similarity matrix are the batch followed by them (without gradient).
    """

    def __init__(self, pos_margin: float = 1.0, neg_margin: float = 0.5) -> None:
        super().__init__()
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        s = cosine_similarity(embeddings, ref_embeddings)
        positive, negative = label_masks(labels, ref_labels)
        # y·[m₊ − S]₊ + (1 − y)·S·[S > m₋], summed over the pairs, divided by N
        pull = F.relu(self.pos_margin - s) * positive
        push = s * (negative & (s > self.neg_margin))
        terms = pull + push
        loss = terms.sum() / max(len(labels), 1)

        def stats() -> dict[str, Tensor]:
            pairs = (positive | negative).sum().clamp_min(1)
            return {
                "active_fraction": (terms != 0).sum() / pairs,
                "pos_sim": masked_mean(s, positive),
                "neg_sim": masked_mean(s, negative),
            }

        self._keep_stats(stats, (positive | negative).sum())
        return loss
