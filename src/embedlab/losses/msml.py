"""Margin sample mining loss, MSML (Xiao, Luo, Jiang et al. 2017, arXiv:1710.00478)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import label_masks, pairwise_distance
from embedlab.losses.base import MetricLoss


class MSMLLoss(MetricLoss):
    """L = [max_{a,p} d(a, p) − min_{m,n} d(m, n) + α]₊, one term for the whole batch.

    The hardest positive pair (the farthest same-identity pair) against the hardest
    negative pair (the closest different-identity pair), anywhere in the batch; the two
    pairs need not share a sample. The authors apply it to L2-normalised features with
    euclidean distance: normalising is the model's job.

    Args:
        margin: α, the gap wanted between the two pairs (0.6 in the authors' code).

    A batch without a positive pair or without a negative pair gives a zero loss (and a
    warning when ``stats`` are read). ``stats``: ``active_fraction`` (0 or 1),
    ``pos_dist``, ``neg_dist``.
    """

    def __init__(self, margin: float = 0.6) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        d = pairwise_distance(embeddings)
        positive, negative = label_masks(labels)
        usable = positive.any() & negative.any()
        hardest_pos = d.where(positive, 0.0).amax()  # max_{a,p} d(a, p)  (d ≥ 0)
        hardest_neg = d.where(negative, d.detach().max()).amin()  # min_{m,n} d(m, n)
        loss = F.relu(hardest_pos - hardest_neg + self.margin) * usable

        def stats() -> dict[str, Tensor]:
            return {
                "active_fraction": (loss > 0).float(),
                "pos_dist": hardest_pos * usable,
                "neg_dist": hardest_neg * usable,
            }

        self._keep_stats(stats, usable)
        return loss
