"""The one pairwise-distance function of embedlab, and the label masks every loss shares.

All losses and miners compute the N×N distance matrix of a batch once, with
:func:`pairwise_distance`, and read everything else from it.

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

from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

Metric = Literal["euclidean", "squared_euclidean", "cosine"]

__all__ = ["Metric", "label_masks", "pairwise_distance", "same_label", "upcast"]


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32 if it is a half/bfloat16 tensor (losses compute in float32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


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
        other = x if y is None else y
        x_sq = (x * x).sum(1)
        y_sq = x_sq if y is None else (other * other).sum(1)
        scale = x_sq[:, None] + y_sq[None, :]
        # (1 − τ)·(‖x‖² + ‖y‖²) − 2·x·yᵀ: the rounding noise of the matmul form,
        # τ·(‖x‖² + ‖y‖²), is taken off so that coincident points clamp to exactly 0.
        tol = 4.0 * torch.finfo(x.dtype).eps
        sq = torch.addmm(scale, x, other.T, beta=1.0 - tol, alpha=-2.0).clamp_min_(0.0)
        if y is None:
            sq.fill_diagonal_(0.0)
        out = sq if squared else sq.sqrt_()
        ctx.squared = squared
        # ∂d/∂sq = 1/(2d); at d = 0 (coincident points) the zero sub-gradient, not 1/0
        inv = None if squared else torch.nan_to_num(out.reciprocal(), posinf=0.0)
        ctx.save_for_backward(x, y, inv)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, y, inv = ctx.saved_tensors
        b = grad * 2.0 if ctx.squared else grad * inv
        if y is not None:
            grad_x = torch.addmm(x * b.sum(1, keepdim=True), b, y, alpha=-1.0)
            grad_y = torch.addmm(y * b.sum(0)[:, None], b.T, x, alpha=-1.0)
            return grad_x, grad_y, None
        b = b + b.T
        weight = x * b.sum(1, keepdim=True)
        # a large matmul whose matrix is mostly zeros (a few mined pairs per row): go sparse
        if b.numel() * x.shape[1] >= 1 << 22 and int(torch.count_nonzero(b)) * 16 <= b.numel():
            return weight.sub_(torch.sparse.mm(b.to_sparse(), x)), None, None
        return torch.addmm(weight, b, x, alpha=-1.0), None, None


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
    ctx = (
        torch.autocast(device_type=x.device.type, enabled=False)
        if torch.is_autocast_enabled(x.device.type)
        else nullcontext()
    )
    with ctx:
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


def same_label(labels: Tensor) -> Tensor:
    """Boolean [N, N] mask, True where labels match (the diagonal included)."""
    return labels[:, None] == labels[None, :]


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
