"""Temporal pooling of frame features [B, T, C] → [B, C], for video clips (MARS).

``EmbeddingModel(temporal=...)`` embeds a clip [B, T, C, H, W] frame by frame with its backbone
and pooling, pools the T frame features with one of these modules, then projects and normalises
as for an image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TemporalAttention", "TemporalAverage"]


class TemporalAverage(nn.Module):
    """Temporal average pooling: f = (1/T) Σ_t f_t (Gao & Nevatia 2018's strong baseline)."""

    def forward(self, features: Tensor) -> Tensor:
        return features.mean(dim=1)


class TemporalAttention(nn.Module):
    """Soft attention over frames: a_t = softmax_t(w·ReLU(W f_t)), f = Σ_t a_t f_t.

    Args:
        hidden: width of the scoring layer (its input size is inferred on the first call).
    """

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def weights(self, features: Tensor) -> Tensor:
        """The attention weights [B, T] (each row sums to 1)."""
        return torch.softmax(self.score(features).squeeze(-1).float(), dim=1).to(features.dtype)

    def forward(self, features: Tensor) -> Tensor:
        return (self.weights(features).unsqueeze(-1) * features).sum(dim=1)
