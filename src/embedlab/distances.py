"""The one distance function of embedlab, and the label masks every loss shares.

Every loss, miner, metric and picture computes distances with :func:`pairwise_distance`:
an ordinary autograd function (twice differentiable, ``torch.func``- and
``torch.compile``-friendly) of the embeddings.

Numerics
--------
* Euclidean distances come from one matrix product, ``‖x‖² + ‖y‖² − 2·x·yᵀ``, computed on
  embeddings centred by the batch mean (the distance is translation-invariant, and centring
  shrinks the norms that the rounding error of that form scales with).
* The two nearest other points of each row are then recomputed exactly as ``‖x_i − y_j‖²``
  (a fixed-shape gather, no host synchronisation): the matrix-product form loses all
  precision for pairs closer than about ``1e-3·‖x‖`` in float32, exactly the pairs a loss
  most needs to push apart.
* ``sqrt`` is made safe at zero (double ``where``): coincident points and the diagonal of a
  self-distance matrix have distance exactly 0 and gradient 0 (the sub-gradient of ‖x − y‖
  at x = y) instead of ``inf``/``NaN``, also in the second derivative.
* Half- and bfloat16 inputs (e.g. from a model under autocast) are computed in float32 with
  autocast switched off, so the result is float32 and finite.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Distance = Literal["euclidean", "squared_euclidean", "cosine"]
Metric = Distance  # the former name

__all__ = ["Distance", "Metric", "label_masks", "pairwise_distance", "same_label", "upcast"]

EXACT_NEIGHBOURS = 2  # nearest points per row recomputed exactly


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32 if it is a half/bfloat16 tensor (losses compute in float32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def safe_sqrt(sq: Tensor) -> Tensor:
    """√sq with value and gradient 0 where sq = 0 (and no NaN in any derivative)."""
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, 1.0).sqrt(), 0.0)


def _squared_euclidean(x: Tensor, y: Tensor | None) -> Tensor:
    """‖x_i − y_j‖², with the nearest pairs of every row recomputed exactly."""
    other = x if y is None else y
    with torch.no_grad():
        total = x.sum(0) if y is None else x.sum(0) + other.sum(0)
        centre = total / (len(x) + (0 if y is None else len(other)))
    xc, yc = x - centre, other - centre
    sq = (xc.square().sum(1)[:, None] + yc.square().sum(1)[None, :] - 2.0 * xc @ yc.T).clamp_min(0)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device) if y is None else None
    if eye is not None:
        sq = sq.masked_fill(eye, 0.0)
    k = min(EXACT_NEIGHBOURS, sq.shape[1] - (1 if y is None else 0))
    if k <= 0:
        return sq
    with torch.no_grad():
        search = sq.detach() if eye is None else sq.detach().masked_fill(eye, torch.inf)
        nearest = search.topk(k, dim=1, largest=False).indices  # [N, k]
    exact = (xc[:, None, :] - yc[nearest]).square().sum(2)  # [N, k]
    chosen = torch.zeros_like(sq, dtype=torch.bool).scatter(1, nearest, True)
    exact_full = torch.zeros_like(sq).scatter(1, nearest, exact)
    if y is None:  # keep the matrix symmetric: (j, i) takes the exact value of (i, j)
        exact_full = torch.where(chosen, exact_full, exact_full.T)
        chosen = chosen | chosen.T
    return torch.where(chosen, exact_full, sq)


def pairwise_distance(
    x: Tensor, y: Tensor | None = None, distance: Distance = "euclidean"
) -> Tensor:
    """Distance matrix between the rows of ``x`` [N, D] and of ``y`` [M, D] (``y=None``: x itself).

    Args:
        x: embeddings, shape [N, D].
        y: second set of embeddings, shape [M, D]; ``None`` compares ``x`` with itself and
            then guarantees an exactly zero diagonal.
        distance: ``"euclidean"`` ‖x − y‖, ``"squared_euclidean"`` ‖x − y‖², or
            ``"cosine"`` 1 − cos(x, y) (in [0, 2]).

    Returns:
        The [N, M] distance matrix, float32 for low-precision inputs, else x's dtype.
        Value and gradients are finite everywhere, including where two embeddings coincide.
    """
    if distance not in ("euclidean", "squared_euclidean", "cosine"):
        raise ValueError(f"unknown distance {distance!r}: euclidean, squared_euclidean or cosine")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = upcast(x)
        y = None if y is None else upcast(y).to(x.dtype)
        if distance == "cosine":
            xn = F.normalize(x, dim=1)
            yn = xn if y is None else F.normalize(y, dim=1)
            dist = (1.0 - xn @ yn.T).clamp(0.0, 2.0)
            if y is None:
                eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
                dist = dist.masked_fill(eye, 0.0)
            return dist
        sq = _squared_euclidean(x, y)
        return sq if distance == "squared_euclidean" else safe_sqrt(sq)


def same_label(labels: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """[N, N] mask, True (or 1.0 with a floating ``dtype``) where labels match, diagonal included."""
    same = labels[:, None] == labels[None, :]
    return same if dtype is None else same.to(dtype)


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean [N, N] masks of a batch's labels.

    Returns:
        ``(positive, negative)``: ``positive[i, j]`` is True when i ≠ j share a label
        (the diagonal is excluded), ``negative[i, j]`` when their labels differ.
    """
    same = same_label(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same
