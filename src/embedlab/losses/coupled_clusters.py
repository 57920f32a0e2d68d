"""Coupled clusters loss (Liu, Tian, Wang, Huang, CVPR 2016, "Deep Relative Distance Learning")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import pairwise_distance, upcast
from embedlab.losses.base import MetricLoss


class CoupledClustersLoss(MetricLoss):
    """L = Σ_c Σ_{i ∈ c} ½·[‖f_i − c‖² + α − ‖f* − c‖²]₊.

    For every identity in the batch, c is the mean of its embeddings and f* the
    embedding of another identity nearest to c: members should lie closer to their
    centre, by α, than the closest intruder.

    Args:
        margin: α, in squared-distance units (not reported by the paper; 1.0 default).

    Reduction: mean over all (identity, member) terms. A batch without a positive pair
    or without a second identity gives a zero loss and a warning. ``stats``:
    ``active_fraction``, ``pos_dist`` (‖f_i − c‖²), ``neg_dist`` (‖f* − c‖²).
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        x = upcast(embeddings)
        classes, member_of, size = labels.unique(return_inverse=True, return_counts=True)
        centres = x.new_zeros(len(classes), x.shape[1]).index_add(0, member_of, x)
        centres = centres / size[:, None].to(x.dtype)
        d_pos = (x - centres.index_select(0, member_of)).pow(2).sum(1)  # index_add backward
        to_centres = pairwise_distance(x, centres, metric="squared_euclidean")  # [N, P]
        intruder = member_of[:, None] != torch.arange(len(classes), device=x.device)
        d_neg = (
            torch.where(intruder, to_centres, torch.inf).min(0).values.index_select(0, member_of)
        )
        usable = len(classes) > 1
        d_neg = d_neg if usable else torch.zeros_like(d_neg)
        terms = 0.5 * F.relu(d_pos + self.margin - d_neg)

        def stats() -> dict[str, float]:
            active, pos, neg = self._record(
                active=(terms > 0).float().mean(), pos=d_pos.mean(), neg=d_neg.mean()
            )
            return {"active_fraction": active, "pos_dist": pos, "neg_dist": neg}

        self._defer_stats(stats)
        if not usable or int(size.max()) < 2:
            return self._degenerate(embeddings)
        return terms.mean()
