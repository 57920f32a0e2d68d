"""Proxy-anchor loss (Kim, Kim, Cho, Kwak, CVPR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distances import pairwise_distance
from embedlab.losses.base import MetricLoss, check_sizes, masked_logsumexp, masked_mean


class ProxyAnchorLoss(MetricLoss):
    """L = 1/|P⁺|·Σ_{p∈P⁺} log[1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}] + 1/|P|·Σ_{p∈P} log[1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)}].

    One learnt proxy p per class; s is the cosine similarity; X_p⁺ the batch's samples of
    p's class, X_p⁻ the others; P⁺ the proxies with at least one sample in the batch.

    Args:
        num_classes: number of classes (labels in [0, num_classes)); ``None``: the data's.
        embedding_dim: dimension of the embeddings and the proxies; ``None``: the model's.
        margin: δ (0.1).
        alpha: α, the scale (32).

    The proxies (``proxies``, num_classes × embedding_dim, Kaiming-normal initialised as in
    the authors' code) are a parameter of the loss: its own optimiser group, where the paper
    uses 100× the backbone's learning rate (``LossTerm.lr`` / ``model.loss_lr``).
    ``stats``: ``pos_sim``, ``neg_sim``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        margin: float = 0.1,
        alpha: float = 32.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.margin = margin
        self.alpha = alpha
        self.proxies = nn.Parameter(torch.empty(0, 0))
        if num_classes is not None and embedding_dim is not None:
            self.set_sizes(num_classes, embedding_dim)

    def set_sizes(self, num_classes: int, embedding_dim: int) -> None:
        """Create the proxies (called by the module with the data's classes and the model's
        embedding size; sizes given to the constructor must agree)."""
        check_sizes(self, num_classes, embedding_dim)
        self.num_classes, self.embedding_dim = num_classes, embedding_dim
        if tuple(self.proxies.shape) != (num_classes, embedding_dim):
            self.proxies = nn.Parameter(torch.empty(num_classes, embedding_dim))
            nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        s = 1.0 - pairwise_distance(embeddings, self.proxies, distance="cosine")  # [B, C]
        classes = self.proxies.shape[0]
        member = F.one_hot(labels, classes).bool()  # x ∈ X_p⁺
        pos = masked_logsumexp(-self.alpha * (s - self.margin), member, dim=0, add_one=True)
        neg = masked_logsumexp(self.alpha * (s + self.margin), ~member, dim=0, add_one=True)
        with_pos = member.any(0)
        loss = pos.sum() / with_pos.sum().clamp_min(1) + neg.sum() / classes

        def stats() -> dict[str, Tensor]:
            return {"pos_sim": masked_mean(s, member), "neg_sim": masked_mean(s, ~member)}

        self._keep_stats(stats)
        return loss
