"""Proxy-anchor loss (Kim, Kim, Cho, Kwak, CVPR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distances import pairwise_distance
from embedlab.losses.base import MetricLoss, masked_logsumexp, masked_mean


class ProxyAnchorLoss(MetricLoss):
    """L = 1/|P⁺|·Σ_{p∈P⁺} log[1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}] + 1/|P|·Σ_{p∈P} log[1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)}].

    One learnt proxy p per class; s is the cosine similarity; X_p⁺ the batch's samples of
    p's class, X_p⁻ the others; P⁺ the proxies with at least one sample in the batch.

    Args:
        num_classes: number of classes (labels in [0, num_classes)).
        embedding_dim: dimension of the embeddings and the proxies.
        margin: δ (0.1).
        alpha: α, the scale (32).

    The proxies (``proxies``, num_classes × embedding_dim, Kaiming-normal initialised as in
    the authors' code) are a parameter of the loss: its own optimiser group, where the paper
    uses 100× the backbone's learning rate (``LossTerm.lr`` / ``model.loss_lr``).
    ``stats``: ``pos_sim``, ``neg_sim``.
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, margin: float = 0.1, alpha: float = 32.0
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.margin = margin
        self.alpha = alpha
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        s = 1.0 - pairwise_distance(embeddings, self.proxies, distance="cosine")  # [B, C]
        member = F.one_hot(labels, self.num_classes).bool()  # x ∈ X_p⁺
        pos = masked_logsumexp(-self.alpha * (s - self.margin), member, dim=0, add_one=True)
        neg = masked_logsumexp(self.alpha * (s + self.margin), ~member, dim=0, add_one=True)
        with_pos = member.any(0)
        loss = pos.sum() / with_pos.sum().clamp_min(1) + neg.sum() / self.num_classes

        def stats() -> dict[str, Tensor]:
            return {"pos_sim": masked_mean(s, member), "neg_sim": masked_mean(s, ~member)}

        self._keep_stats(stats)
        return loss
