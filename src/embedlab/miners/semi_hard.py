"""Semi-hard negative mining (FaceNet, Schroff, Kalenichenko, Philbin 2015)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection, sorted_negatives

Fallback = Literal["easiest", "hardest", "none"]


class SemiHardMiner(TripletMiner):
    """For every anchor–positive pair, the closest negative farther than the positive.

    n* = argmin_n { d(a, n) : y_n ≠ y_a, d(a, n) > d(a, p) }. One slot per (anchor,
    candidate positive), [N, N]; a pair whose anchor has no negative is invalid.

    Args:
        fallback: what a pair with no negative farther than its positive uses:
            ``"easiest"`` the farthest negative (TensorFlow's ``triplet_semihard_loss``,
            Google's reference implementation of FaceNet's loss), ``"hardest"`` the
            closest negative (a batch-hard triplet, which FaceNet warns can collapse
            training early), ``"none"`` drop the pair.
    """

    def __init__(self, fallback: Fallback = "easiest") -> None:
        if fallback not in ("easiest", "hardest", "none"):
            raise ValueError(
                f"SemiHardMiner: fallback must be easiest, hardest or none, got {fallback!r}"
            )
        self.fallback = fallback

    @torch.no_grad()
    def __call__(
        self,
        dist: Tensor,
        labels: Tensor,
        embedding_dim: int | None = None,
        ref_labels: Tensor | None = None,
    ) -> TripletSelection:
        positive, negative = label_masks(labels, ref_labels)
        values, columns = sorted_negatives(dist, negative)  # [N, N], increasing
        n_neg = negative.sum(1, keepdim=True)
        # position of the first negative strictly farther than each positive
        first = torch.searchsorted(values.contiguous(), dist.contiguous(), right=True)
        found = first < n_neg
        if self.fallback == "easiest":
            other = (n_neg - 1).clamp_min(0).expand_as(first)
        else:
            other = torch.zeros_like(first)
        position = torch.where(found, first, other).clamp_max(dist.shape[1] - 1)
        valid = positive & (n_neg > 0)
        if self.fallback == "none":
            valid = valid & found
        pos_index = torch.arange(dist.shape[1], device=dist.device).expand(len(labels), -1)
        return TripletSelection(pos_index, columns.gather(1, position), valid)
