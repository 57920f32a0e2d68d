"""What every embedlab loss shares: the ``stats`` it exposes and the degenerate-batch rule.

Degenerate batches
------------------
When a batch holds no term of a loss's formula (a single identity: no negative; all
labels distinct: no positive pair), the loss returns a zero that is still connected
to the embeddings (its gradient is 0, never NaN) and emits a ``UserWarning``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

__all__ = ["MetricLoss", "masked_mean"]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` (broadcast to ``mask``) over the True entries of ``mask``; 0 if none."""
    values, mask = torch.broadcast_tensors(values, mask)
    total = torch.where(mask, values, values.new_zeros(())).sum()
    return total / mask.sum().clamp_min(1)


class MetricLoss(nn.Module):
    """Base of the embedlab losses. After each call, ``stats`` holds python floats to log."""

    stats: dict[str, float]

    def __init__(self) -> None:
        super().__init__()
        self.stats = {}

    def _finish(self, loss: Tensor, num_terms: Tensor, **stats: Tensor) -> Tensor:
        """Fill ``stats`` with one host transfer and warn when the batch had no term."""
        values = torch.stack([num_terms.detach().float()] + [s.detach().float() for s in stats.values()])
        count, *rest = values.tolist()
        self.stats = dict(zip(stats, rest, strict=True))
        if count == 0:
            warnings.warn(
                f"{type(self).__name__}: the batch has no valid term (a single identity, or no "
                "positive pair); returning a zero loss.",
                stacklevel=3,
            )
        return loss
