"""Global pooling of a feature map ``[B, C, H, W]`` (or of transformer tokens ``[B, N, C]``) into ``[B, C]``.

``EmbeddingModel(pooling=...)`` takes any such module by ``class_path``, e.g.
``{class_path: embedlab.models.GeM, init_args: {p: 3, learnable: true}}``; for a vision
transformer, ``ClsToken``, ``MeanTokens`` or ``GeMTokens``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _feature_map(x: Tensor, pool: nn.Module) -> Tensor:
    if x.dim() != 4:
        raise ValueError(
            f"{type(pool).__name__} pools a [B, C, H, W] feature map, got shape {tuple(x.shape)}; "
            "for transformer tokens [B, N, C] use embedlab.models.ClsToken, MeanTokens or GeMTokens"
        )
    return x


class AvgPool(nn.Module):
    """Global average pooling."""

    def forward(self, x: Tensor) -> Tensor:
        return _feature_map(x, self).mean(dim=(-2, -1))


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
        pooled = _feature_map(x, self).clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)


class ClsToken(nn.Module):
    """The class token of a transformer's output ``[B, N, C]`` (token 0), as TransReID uses."""

    def forward(self, x: Tensor) -> Tensor:
        return _tokens(x, self)[:, 0]


class MeanTokens(nn.Module):
    """The mean of the patch tokens, the first ``prefix_tokens`` (class / register tokens) left out.

    Args:
        prefix_tokens: the model's non-patch tokens (timm's ``num_prefix_tokens``: 1 for a
            ViT, 2 for distilled DeiT, 1 + R with R registers).
    """

    def __init__(self, prefix_tokens: int = 1) -> None:
        super().__init__()
        self.prefix_tokens = prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        return _tokens(x, self)[:, self.prefix_tokens :].mean(1)


class GeMTokens(GeM):
    """Generalised-mean pooling over the patch tokens (prefix tokens left out, as ``MeanTokens``).

    Args:
        p, eps, learnable: as ``GeM``.
        prefix_tokens: as ``MeanTokens``.
    """

    def __init__(
        self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True, prefix_tokens: int = 1
    ) -> None:
        super().__init__(p, eps, learnable)
        self.prefix_tokens = prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        patches = _tokens(x, self)[:, self.prefix_tokens :]
        return patches.clamp(min=self.eps).pow(self.p).mean(1).pow(1.0 / self.p)


def _tokens(x: Tensor, pool: nn.Module) -> Tensor:
    if x.dim() != 3:
        raise ValueError(
            f"{type(pool).__name__} pools transformer tokens [B, N, C], got shape {tuple(x.shape)}; "
            "for a feature map [B, C, H, W] use embedlab.models.AvgPool or GeM"
        )
    return x
