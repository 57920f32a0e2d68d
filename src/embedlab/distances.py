"""The one pairwise-distance function of embedlab, and the label masks every loss shares.

All losses and miners compute the N×N distance matrix of a batch once, with
:func:`pairwise_distance`, and read everything else from it.

Numerics
--------
* The squared euclidean distance is computed with one matrix product,
  ``‖x‖² + ‖y‖² − 2·x·yᵀ``, clamped at 0.
* The euclidean distance is its square root, made safe at zero: wherever the squared
  distance is below the rounding noise of the matrix-product form (a relative
  ``4·eps·(‖x‖² + ‖y‖²)``), or on the diagonal of a self-distance matrix, the
  distance is exactly 0 and its gradient is 0 (the sub-gradient of ‖x − y‖ at x = y),
  instead of the ``inf``/``NaN`` a plain ``sqrt`` gives.
* Half- and bfloat16 inputs (e.g. from a model under autocast) are computed in
  float32 with autocast switched off, so the result is float32 and finite.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Metric = Literal["euclidean", "squared_euclidean", "cosine"]

__all__ = ["Metric", "label_masks", "pairwise_distance", "upcast"]


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32 if it is a half/bfloat16 tensor (losses compute in float32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def pairwise_distance(x: Tensor, y: Tensor | None = None, metric: Metric = "euclidean") -> Tensor:
    """Distance matrix between the rows of ``x`` [N, D] and of ``y`` [M, D] (``y=None``: x itself).

    Args:
        x: embeddings, shape [N, D].
        y: second set of embeddings, shape [M, D]; ``None`` compares ``x`` with itself
            and then guarantees an exactly zero diagonal.
        metric: ``"euclidean"`` ‖x − y‖, ``"squared_euclidean"`` ‖x − y‖², or
            ``"cosine"`` 1 − cos(x, y) (in [0, 2]).

    Returns:
        The [N, M] distance matrix, float32 for low-precision inputs, else x's dtype.
        Gradients are finite everywhere, including where two embeddings coincide.
    """
    self_distance = y is None
    ctx = (
        torch.autocast(device_type=x.device.type, enabled=False)
        if torch.is_autocast_enabled(x.device.type)
        else nullcontext()
    )
    with ctx:
        x = upcast(x)
        y = x if y is None else upcast(y).to(x.dtype)
        if metric == "cosine":
            xn = F.normalize(x, dim=1)
            yn = xn if self_distance else F.normalize(y, dim=1)
            dist = (1.0 - xn @ yn.T).clamp(0.0, 2.0)
            if self_distance:
                dist = dist - torch.diag_embed(dist.diagonal())  # exact zeros, graph kept
            return dist
        x_sq = x.pow(2).sum(1)
        y_sq = x_sq if self_distance else y.pow(2).sum(1)
        scale = x_sq[:, None] + y_sq[None, :]
        sq = (scale - 2.0 * (x @ y.T)).clamp_min(0.0)
        # Below this the matmul form only holds rounding noise: treat as coincident points.
        nonzero = sq > (4.0 * torch.finfo(sq.dtype).eps) * scale
        if self_distance:
            nonzero.fill_diagonal_(False)
        if metric == "squared_euclidean":
            return torch.where(nonzero, sq, torch.zeros_like(sq))
        if metric != "euclidean":
            raise ValueError(f"unknown metric {metric!r}")
        # Double `where`: sqrt never sees a zero, so no inf·0 = NaN in the backward pass.
        safe = torch.where(nonzero, sq, torch.ones_like(sq))
        return torch.where(nonzero, safe.sqrt(), torch.zeros_like(sq))


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean [N, N] masks of a batch's labels.

    Returns:
        ``(positive, negative)``: ``positive[i, j]`` is True when i ≠ j share a label
        (the diagonal is excluded), ``negative[i, j]`` when their labels differ.
    """
    same = labels[:, None] == labels[None, :]
    positive = same.clone()
    positive.fill_diagonal_(False)
    return positive, ~same
