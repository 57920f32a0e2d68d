"""The pairwise distance of embedlab, and the label masks every loss shares.

All losses and miners compute the N×N distance matrix of a batch once and read everything
else from it: :func:`distance_matrix` gives the matrix without autograd together with its
pullback (∂L/∂d → ∂L/∂x), which the losses use to be a single backward node;
:func:`pairwise_distance` is the same computation as an ordinary differentiable function
(also between two sets, and cosine).

Numerics
--------
* The squared euclidean distance is computed with one matrix product,
  ``‖x‖² + ‖y‖² − 2·x·yᵀ``, clamped at 0, with a hand-written backward pass
  (one matmul, or none when only a few pairs per row carry a gradient).
* The euclidean distance is its square root, made safe at zero: the rounding noise of
  the matrix-product form (a relative ``4·eps·(‖x‖² + ‖y‖²)``) is subtracted before
  clamping, so coincident points and the diagonal of a self-distance matrix get a
  distance of exactly 0 and a gradient of 0 (the sub-gradient of ‖x − y‖ at x = y)
  instead of the ``inf``/``NaN`` a plain ``sqrt`` gives.
* Half- and bfloat16 inputs (e.g. from a model under autocast) are computed in
  float32 with autocast switched off, so the result is float32 and finite.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

Metric = Literal["euclidean", "squared_euclidean", "cosine"]

__all__ = [
    "Metric",
    "distance_matrix",
    "label_masks",
    "pairwise_distance",
    "same_label",
    "upcast",
]


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32 if it is a half/bfloat16 tensor (losses compute in float32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _euclidean(x: Tensor, y: Tensor | None, squared: bool) -> Tensor:
    """‖x_i − y_j‖ or its square, in one matrix product and in-place steps."""
    other = x if y is None else y
    x_sq = x.square().sum(1)
    y_sq = x_sq if y is None else other.square().sum(1)
    # (1 − τ)·(‖x‖² + ‖y‖²) − 2·x·yᵀ: the rounding noise of the matmul form,
    # τ·(‖x‖² + ‖y‖²), is taken off so that coincident points clamp to exactly 0.
    tol = 4.0 * torch.finfo(x.dtype).eps
    sq = torch.add(x_sq[:, None], y_sq[None, :]).addmm_(x, other.T, beta=1.0 - tol, alpha=-2.0)
    sq.clamp_min_(0.0)
    if y is None:
        sq.fill_diagonal_(0.0)
    return sq if squared else sq.sqrt_()


def _euclidean_grad(
    x: Tensor, y: Tensor | None, dist: Tensor, grad: Tensor, squared: bool, symmetric: bool
) -> tuple[Tensor, Tensor | None]:
    """∂L/∂x (and ∂L/∂y) from ∂L/∂d.

    B = 2·∂L/∂sq = ∂L/∂d / d (0 where d = 0: the sub-gradient of ‖x − y‖ at x = y);
    ∂L/∂x = rowsum(B)·x − B·y, ∂L/∂y = colsum(B)·y − Bᵀ·x. For y = x the two add up:
    B + Bᵀ replaces B (2·B when the caller knows B is symmetric).
    """
    b = grad * 2.0 if squared else torch.div(grad, dist).nan_to_num_(0.0, 0.0, 0.0)
    if y is not None:
        grad_x = torch.addmm(x * b.sum(1, keepdim=True), b, y, alpha=-1.0)
        return grad_x, torch.addmm(y * b.sum(0)[:, None], b.T, x, alpha=-1.0)
    if not symmetric:
        b = b + b.T
    scale = 2.0 if symmetric else 1.0
    weight = x * b.sum(1, keepdim=True)
    # a large matmul whose matrix is mostly zeros (a few mined pairs per row): go sparse
    if b.numel() * x.shape[1] >= 1 << 22 and int(torch.count_nonzero(b)) * 16 <= b.numel():
        return weight.sub_(torch.sparse.mm(b.to_sparse(), x)).mul_(scale), None
    return weight.addmm_(b, x, beta=scale, alpha=-scale), None


class _EuclideanDistance(torch.autograd.Function):
    """‖x_i − y_j‖ or ‖x_i − y_j‖² with one matmul forward and at most one matmul backward.

    Forward: sq = ‖x‖² + ‖y‖² − 2·x·yᵀ, less its rounding noise, clamped at 0 (the
    diagonal of a self-distance is set to exactly 0).
    Backward, with B = 2·∂L/∂sq (= ∂L/∂d / d for the euclidean distance, 0 where d = 0):
    ∂L/∂x = rowsum(B)·x − B·y and ∂L/∂y = colsum(B)·y − Bᵀ·x (for y = x, B + Bᵀ
    replaces B). When B is sparse (mining keeps a few pairs per row) the product is a
    sparse one, which avoids the dense N×N×D matmul.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor | None, squared: bool) -> Tensor:
        out = _euclidean(x, y, squared)
        ctx.save_for_backward(x, y, out)
        ctx.squared = squared
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, y, out = ctx.saved_tensors
        return (*_euclidean_grad(x, y, out, grad, ctx.squared, False), None)


Pullback = Callable[..., Tensor]


def distance_matrix(
    x: Tensor, metric: Literal["euclidean", "squared_euclidean"] = "euclidean"
) -> tuple[Tensor, Pullback]:
    """The [N, N] distance matrix of ``x`` with itself, without autograd, and its pullback.

    The same numbers as :func:`pairwise_distance` (``x``, ``y=None``), for losses that
    compute their own gradient G = ∂L/∂d: ``pullback(G, symmetric=False)`` returns ∂L/∂x
    (in x's dtype), so that a loss is a single backward node; pass ``symmetric=True``
    when G equals its transpose (one N×N addition fewer). The matrix must not be
    modified in place.
    """
    if metric not in ("euclidean", "squared_euclidean"):
        raise ValueError(f"unknown metric {metric!r}")
    squared = metric == "squared_euclidean"
    xf = upcast(x.detach())  # detached: no autograd graph is recorded below
    with _no_autocast(x):
        out = _euclidean(xf, None, squared)

    def pullback(grad: Tensor, symmetric: bool = False) -> Tensor:
        return _euclidean_grad(xf, None, out, grad.detach(), squared, symmetric)[0].to(x.dtype)

    return out, pullback


def _no_autocast(x: Tensor) -> AbstractContextManager[Any]:
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return nullcontext()


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
    with _no_autocast(x):
        x = upcast(x)
        y = None if y is None else upcast(y).to(x.dtype)
        if metric == "cosine":
            xn = F.normalize(x, dim=1)
            yn = xn if y is None else F.normalize(y, dim=1)
            dist = (1.0 - xn @ yn.T).clamp(0.0, 2.0)
            if y is None:
                dist = dist - torch.diag_embed(dist.diagonal())  # exact zeros, graph kept
            return dist
        if metric not in ("euclidean", "squared_euclidean"):
            raise ValueError(f"unknown metric {metric!r}")
        out: Tensor = _EuclideanDistance.apply(x, y, metric == "squared_euclidean")
        return out


def same_label(labels: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """[N, N] mask, True (or 1.0 with a floating ``dtype``) where labels match, diagonal included.

    The floating mask is written directly by the comparison (of the labels as float64,
    exact up to 2⁵³): on the CPU, arithmetic with it is several times faster than
    ``where`` or products with a boolean mask.
    """
    if dtype is None:
        return labels[:, None] == labels[None, :]
    if labels.device.type == "mps":  # no float64 there
        return (labels[:, None] == labels[None, :]).to(dtype)
    out = torch.empty(len(labels), len(labels), dtype=dtype, device=labels.device)
    exact = labels.to(torch.float64)
    return torch.eq(exact[:, None], exact[None, :], out=out)


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean [N, N] masks of a batch's labels.

    Returns:
        ``(positive, negative)``: ``positive[i, j]`` is True when i ≠ j share a label
        (the diagonal is excluded), ``negative[i, j]`` when their labels differ.
    """
    same = same_label(labels)
    positive = same.clone()
    positive.fill_diagonal_(False)
    return positive, ~same
