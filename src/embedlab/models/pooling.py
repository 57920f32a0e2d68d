"""Global pooling of a feature map ``[B, C, H, W]`` into ``[B, C]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AvgPool(nn.Module):
    """Global average pooling."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al. 2018): (mean(x^p))^(1/p), p learnable."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)


def build_pooling(name: str) -> nn.Module:
    if name == "avg":
        return AvgPool()
    if name == "gem":
        return GeM()
    raise ValueError(f"unknown pooling {name!r}: choose 'avg' or 'gem'")
