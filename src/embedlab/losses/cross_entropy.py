"""Identity cross-entropy with label smoothing (Szegedy et al. 2016; Luo et al. 2019, Bag of Tricks)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import upcast
from embedlab.losses.base import MetricLoss


class CrossEntropyLoss(MetricLoss):
    """L = −Σ_k q_k·log softmax(z)_k, q = (1 − ε)·onehot(y) + ε/K.

    Unlike the other losses it is called on classifier **logits**: ``loss(logits,
    labels)``; the LightningModule owns the classifier head.

    Args:
        label_smoothing: ε, the probability mass spread uniformly over the K classes
            (0.1 in the Bag-of-Tricks ReID baseline; 0 gives plain cross-entropy).

    Reduction: mean over the batch. ``stats``: ``accuracy`` (top-1 of the logits).
    """

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        logits = upcast(logits)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self._keep_stats(lambda: {"accuracy": (logits.argmax(1) == labels).float().mean()})
        return loss
