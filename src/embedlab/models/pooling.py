"""Global pooling of a feature map ``[B, C, H, W]`` into ``[B, C]``.

``EmbeddingModel(pooling=...)`` takes any such module by ``class_path``, e.g.
``{class_path: embedlab.models.GeM, init_args: {p: 3, learnable: true}}``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AvgPool(nn.Module):
    """Global average pooling."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al. 2018): (mean(x^p))^(1/p).

    Args:
        p: the exponent (1: average pooling; large: towards max pooling).
        eps: lower clamp of the activations.
        learnable: train ``p`` with the network.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)
