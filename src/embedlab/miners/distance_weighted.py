"""Distance-weighted sampling (Wu, Manmatha, Smola, Krähenbühl, ICCV 2017, "Sampling Matters")."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection


class DistanceWeightedMiner(TripletMiner):
    """One negative per anchor–positive pair, drawn with probability ∝ 1 / q(d(a, n)).

    On the unit sphere in n dimensions the distance between random points has density
    q(d) ∝ d^(n−2)·[1 − d²/4]^((n−3)/2). Sampling negatives with weight 1/q(d)
    spreads them over all distances instead of the crowd near √2. The weights are
    computed in log space, log w = (2 − n)·log d − ((n − 3)/2)·log(1 − d²/4), and
    normalised per anchor by a softmax; one uniform number per pair then picks a
    negative by inverse-CDF search.

    **Assumes L2-normalised embeddings** and euclidean distances (the density holds
    on the unit sphere only).

    Args:
        cutoff: distances are clamped below at this value before weighting (bounds
            the weight of very close negatives; 0.5 in the paper).
        nonzero_loss_cutoff: negatives at or beyond this distance get weight 0 (they
            would give no loss anyway; 1.4 in the paper). An anchor with no negative
            below it samples uniformly among its negatives. (The authors' code then
            draws uniformly among all N samples of the batch, positives and the anchor
            itself included, which yields invalid triplets; embedlab keeps to negatives.)
        generator: optional ``torch.Generator`` making the sampling reproducible (on
            the device of the distances, or on the CPU).
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        generator: torch.Generator | None = None,
    ) -> None:
        self.cutoff = cutoff
        self.nonzero_loss_cutoff = nonzero_loss_cutoff
        self.generator = generator

    @torch.no_grad()
    def __call__(
        self,
        dist: Tensor,
        labels: Tensor,
        embedding_dim: int | None = None,
        ref_labels: Tensor | None = None,
    ) -> TripletSelection:
        if embedding_dim is None:
            raise ValueError("DistanceWeightedMiner needs the embedding dimension")
        n = float(embedding_dim)
        positive, negative = label_masks(labels, ref_labels)
        d = dist.clamp(self.cutoff, 1.999)  # 1/q diverges at d = 2
        log_w = (2.0 - n) * d.log() - (n - 3.0) / 2.0 * torch.log1p(-0.25 * d * d)
        allowed = negative & (dist < self.nonzero_loss_cutoff)
        has_neg = negative.any(1, keepdim=True)
        # No negative below the cutoff: uniform over the negatives (no negative at all:
        # uniform over everything, a dummy draw the loss masks out).
        fallback = ~allowed.any(1, keepdim=True)
        allowed = torch.where(fallback, negative | ~has_neg, allowed)
        log_w = torch.where(allowed, torch.where(fallback, 0.0, log_w), -torch.inf)
        cdf = torch.softmax(log_w, dim=1).cumsum(1)
        # inverse-CDF draw, one uniform number per (anchor, candidate positive) slot
        g = self.generator
        size = tuple(dist.shape)
        u = torch.rand(size, generator=g, device=dist.device if g is None else g.device)
        u = u.to(dist.device, dist.dtype) * cdf[:, -1:]
        drawn = torch.searchsorted(cdf, u, right=True).clamp_max(dist.shape[1] - 1)
        columns = torch.arange(dist.shape[1], device=dist.device).expand(len(labels), -1)
        return TripletSelection(columns, drawn, positive & has_neg)
