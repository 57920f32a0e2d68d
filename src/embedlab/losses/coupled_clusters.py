"""Coupled clusters loss (Liu, Tian, Wang, Huang, CVPR 2016, "Deep Relative Distance Learning")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import label_masks, pairwise_distance, same_label, upcast
from embedlab.losses.base import MetricLoss


class CoupledClustersLoss(MetricLoss):
    """L = Σ_c Σ_{i ∈ c} ½·[‖f_i − c‖² + α − ‖f* − c‖²]₊.

    For every identity in the batch, c is the mean of its embeddings and f* the embedding
    of another identity nearest to c: members should lie closer to their centre, by α,
    than the closest intruder.

    As in Liu et al., the centre c is a constant of each step: it is computed from the
    batch and detached, so the gradient of a term moves f_i and f* only (∂L/∂f_i =
    f_i − c and ∂L/∂f* = −(f* − c) for an active term). ``centre_gradient=True`` lets the
    gradient flow through c into every member of the identity as well (plain autograd of
    the same value).

    Args:
        margin: α, in squared-distance units (not reported by the paper; 1.0 default).
        centre_gradient: differentiate through the centre c (False: c is a constant, the
            paper's gradient).

    Reduction: mean over all (identity, member) terms, i.e. over the samples. A batch
    without a positive pair or without a second identity gives a zero loss (and a warning
    when ``stats`` are read). ``stats``: ``active_fraction``, ``pos_dist`` (‖f_i − c‖²),
    ``neg_dist`` (‖f* − c‖²).
    """

    def __init__(self, margin: float = 1.0, centre_gradient: bool = False) -> None:
        super().__init__()
        self.margin = margin
        self.centre_gradient = centre_gradient

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        x = upcast(embeddings)
        same = same_label(labels, x.dtype)
        centre = same @ x / same.sum(1, keepdim=True)  # [N, D]: the centre of i's identity
        if not self.centre_gradient:
            centre = centre.detach()  # c: a constant of the step (Liu et al.)
        d_pos = (x - centre).square().sum(1)  # ‖f_i − c‖²
        to_centre = pairwise_distance(centre, x, distance="squared_euclidean")  # ‖f_j − c_i‖²
        positive, negative = label_masks(labels)
        d_neg = to_centre.where(negative, to_centre.detach().max()).amin(1)  # ‖f* − c‖²
        usable = positive.any() & negative.any()
        terms = 0.5 * F.relu(d_pos + self.margin - d_neg)
        loss = terms.mean() * usable

        def stats() -> dict[str, Tensor]:
            return {
                "active_fraction": (terms > 0).float().mean(),
                "pos_dist": d_pos.mean(),
                "neg_dist": d_neg.mean(),
            }

        self._keep_stats(stats, usable)
        return loss
