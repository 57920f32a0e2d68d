"""Center loss (Wen, Zhang, Li, Qiao, ECCV 2016), as used in the Bag-of-Tricks ReID baseline."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from embedlab.distances import upcast
from embedlab.losses.base import MetricLoss, check_sizes


class CenterLoss(MetricLoss):
    """L = (1/N)·Σ_i ‖f_i − c_{y_i}‖², with one learnt centre c_k per class.

    Wen et al. write ½·Σ_i; embedlab follows the Bag-of-Tricks code (Luo et al. 2019),
    a batch mean without the ½, so that its weight 5e-4 carries over. The centres are
    parameters of this module (Bag of Tricks trains them with SGD, lr 0.5, in their own
    optimiser group, undoing the loss weight).

    Args:
        num_classes: number of classes K; labels must lie in [0, K). ``None``: the data's
            number of training classes, passed by the module (:meth:`set_sizes`).
        embedding_dim: dimension D of the embeddings. ``None``: the model's embedding size.

    ``stats``: ``center_dist`` (mean distance of the embeddings to their centre).
    """

    def __init__(self, num_classes: int | None = None, embedding_dim: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.centers = nn.Parameter(torch.empty(0, 0))
        if num_classes is not None and embedding_dim is not None:
            self.set_sizes(num_classes, embedding_dim)

    def set_sizes(self, num_classes: int, embedding_dim: int) -> None:
        """Create the K × D centres; sizes given to the constructor must agree."""
        check_sizes(self, num_classes, embedding_dim)
        self.num_classes, self.embedding_dim = num_classes, embedding_dim
        if tuple(self.centers.shape) != (num_classes, embedding_dim):
            self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        sq = (upcast(embeddings) - self.centers.index_select(0, labels)).pow(2).sum(1)
        self._keep_stats(lambda: {"center_dist": sq.sqrt().mean()})
        return sq.mean()
