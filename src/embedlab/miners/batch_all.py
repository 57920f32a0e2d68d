"""Batch-all mining (Hermans, Beyer, Leibe 2017): every valid triplet of the batch."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import TripletMiner, TripletSelection


class BatchAllMiner(TripletMiner):
    """All triplets (a, p, n) with y_a = y_p, a ≠ p, y_n ≠ y_a.

    One slot per (anchor, candidate positive) — [N, N], valid where the pair is positive —
    with ``negative=None`` and the anchor's negatives as a mask: losses sum over the
    triplets without materialising them (see :func:`embedlab.miners.base.hinge_sum`).
    """

    @torch.no_grad()
    def __call__(
        self,
        dist: Tensor,
        labels: Tensor,
        embedding_dim: int | None = None,
        ref_labels: Tensor | None = None,
    ) -> TripletSelection:
        positive, negative = label_masks(labels, ref_labels)
        columns = torch.arange(dist.shape[1], device=dist.device).expand(len(labels), -1)
        valid = positive & negative.any(1, keepdim=True)
        return TripletSelection(columns, None, valid, negative)
