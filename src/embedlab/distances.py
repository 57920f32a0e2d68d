"""The one distance function of embedlab, and the label masks every loss shares.

Every loss, miner, metric and picture computes distances with :func:`pairwise_distance`:
a differentiable function of the embeddings (twice differentiable, ``torch.func``- and
``torch.compile``-friendly).

Numerics
--------
* Euclidean distances come from one matrix product, ``‖x‖² + ‖y‖² − 2·x·yᵀ``, computed on
  embeddings centred by the batch mean (the distance is translation-invariant, and centring
  shrinks the norms that the rounding error of that form scales with).
* The two nearest other points of each row are then recomputed exactly as ``‖x_i − y_j‖²``
  (a fixed-shape gather in the forward pass, no host synchronisation; the gradient is the
  same function's, so the backward pass is unchanged): the matrix-product form loses all
  precision for pairs closer than about ``1e-3·‖x‖`` in float32, exactly the pairs a loss
  most needs to push apart.
* Its backward pass is one matrix product per input, written in differentiable operations
  (double backward and ``torch.func`` work); at zero distance — coincident points, the
  diagonal of a self-distance matrix — the gradient is 0 (the sub-gradient of ‖x − y‖ at
  x = y) instead of ``inf``/``NaN``.
* Half- and bfloat16 inputs (e.g. from a model under autocast) are computed in float32 with
  autocast switched off, so the result is float32 and finite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Distance = Literal["euclidean", "squared_euclidean", "cosine"]

__all__ = [
    "Distance",
    "batch_as_references",
    "cosine_similarity",
    "label_masks",
    "pairwise_distance",
    "references",
    "same_label",
    "upcast",
]

EXACT_NEIGHBOURS = 2  # nearest points per row recomputed exactly


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32 if it is a half/bfloat16 tensor (losses compute in float32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _Euclidean(torch.autograd.Function):
    """‖x_i − y_j‖ or ‖x_i − y_j‖² by one matrix product, and one matrix product per input back.

    Forward: ‖x‖² + ‖y‖² − 2·x·yᵀ, clamped at 0 (``y=None``: x with itself, zero diagonal),
    then the ``EXACT_NEIGHBOURS`` nearest entries of each row recomputed as ‖x_i − y_j‖²
    (the same function, computed without cancellation).
    Backward, with B = 2·∂L/∂sq (= ∂L/∂d / d for d = √sq, 0 where d = 0):
    ∂L/∂x = rowsum(B)·x − B·y, ∂L/∂y = colsum(B)·y − Bᵀ·x; for y = x the two add up with
    B + Bᵀ in place of B (one product instead of autograd's two).
    The backward is written in differentiable operations, so double backward, ``torch.func``
    and ``torch.compile`` see through it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, y: Tensor | None, squared: bool) -> Tensor:
        other = x if y is None else y
        x_sq = x.square().sum(1)
        y_sq = x_sq if y is None else other.square().sum(1)
        sq = torch.addmm(x_sq[:, None] + y_sq[None, :], x, other.T, alpha=-2.0).clamp_min(0.0)
        eye = torch.eye(len(x), dtype=torch.bool, device=x.device) if y is None else None
        if eye is not None:
            sq = sq.masked_fill(eye, torch.inf)  # not a neighbour of itself; 0 below
        k = min(EXACT_NEIGHBOURS, sq.shape[1] - (1 if y is None else 0))
        if k > 0:
            nearest = sq.topk(k, dim=1, largest=False).indices  # [N, k]
            near = other.index_select(0, nearest.flatten()).view(len(x), k, -1)
            exact = (x[:, None, :] - near).square().sum(2)
            sq.scatter_(1, nearest, exact)
            if y is None:  # (j, i) gets the same exact value as (i, j)
                rows = torch.arange(len(x), device=x.device)[:, None].expand_as(nearest)
                sq.index_put_((nearest.flatten(), rows.flatten()), exact.flatten())
        if eye is not None:
            sq = sq.masked_fill(eye, 0.0)
        return sq if squared else sq.sqrt_()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor | None, bool], output: Tensor) -> None:
        x, y, squared = inputs
        ctx.squared = squared
        ctx.save_for_backward(x, y, None if squared else output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        x, y, dist = ctx.saved_tensors
        # b = 2·∂L/∂sq: 2·G for sq itself, G/d for d = √sq (0 where d = 0: the sub-gradient)
        if dist is None:
            b = 2.0 * grad
        else:
            b = torch.where(dist > 0, grad / torch.where(dist > 0, dist, 1.0), 0.0)
        if y is None:
            sym = b + b.T
            return sym.sum(1, keepdim=True) * x - sym @ x, None, None
        grad_x = b.sum(1, keepdim=True) * x - b @ y
        return grad_x, b.sum(0)[:, None] * y - b.T @ x, None


def _euclidean(x: Tensor, y: Tensor | None, squared: bool) -> Tensor:
    """‖x_i − y_j‖ (or its square) of the batch centred by its mean (a translation changes
    nothing but the rounding)."""
    with torch.no_grad():
        total = x.sum(0) if y is None else x.sum(0) + y.sum(0)
        centre = total / (len(x) + (0 if y is None else len(y)))
    out: Tensor = _Euclidean.apply(x - centre, None if y is None else y - centre, squared)
    return out


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
    with _no_autocast(x):
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
        return _euclidean(x, y, squared=distance == "squared_euclidean")


def _no_autocast(x: Tensor) -> AbstractContextManager[Any]:
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return nullcontext()


def same_label(
    labels: Tensor, dtype: torch.dtype | None = None, ref_labels: Tensor | None = None
) -> Tensor:
    """[N, M] mask, True (or 1.0 with a floating ``dtype``) where labels match, self included.

    The columns are the batch itself (M = N), or with ``ref_labels`` the batch followed by
    the references (M = N + R; see :func:`references`).
    """
    columns = labels if ref_labels is None else torch.cat([labels, ref_labels])
    same = labels[:, None] == columns[None, :]
    return same if dtype is None else same.to(dtype)


def label_masks(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Boolean [N, M] masks of a batch's labels (columns as in :func:`same_label`).

    Returns:
        ``(positive, negative)``: ``positive[i, j]`` is True when j shares i's label and is
        not i itself, ``negative[i, j]`` when their labels differ.
    """
    same = same_label(labels, ref_labels=ref_labels)
    itself = torch.eye(*same.shape, dtype=torch.bool, device=labels.device)  # (i, i)
    return same & ~itself, ~same


def cosine_similarity(embeddings: Tensor, ref_embeddings: Tensor | None = None) -> Tensor:
    """cos(x_i, c_j) = 1 − the cosine distance, [N, M]; columns as in :func:`references`."""
    refs = references(embeddings, ref_embeddings)
    return 1.0 - pairwise_distance(embeddings, refs, distance="cosine")


def references(embeddings: Tensor, ref_embeddings: Tensor | None) -> Tensor | None:
    """The columns of a loss's distance matrix: ``None`` (the batch itself), or the batch
    followed by extra references (e.g. a cross-batch memory), which carry no gradient.

    Inside :func:`batch_as_references` the batch's own columns carry no gradient either.
    """
    if ref_embeddings is None:
        return None
    batch = embeddings.detach() if _BATCH_AS_REFERENCES.get() else embeddings
    return torch.cat([batch, ref_embeddings.detach().to(embeddings.dtype)])


_BATCH_AS_REFERENCES: ContextVar[bool] = ContextVar("batch_as_references", default=False)


@contextmanager
def batch_as_references() -> Iterator[None]:
    """Within this block, the columns :func:`references` builds are all detached.

    The batch then stands in its columns as a memory entry would, a constant: the anchors
    (rows) alone receive the gradient. ``CrossBatchMemory(mode="paper")`` computes its
    memory term so, as the XBM code does with a memory the batch was just enqueued into.
    """
    token = _BATCH_AS_REFERENCES.set(True)
    try:
        yield
    finally:
        _BATCH_AS_REFERENCES.reset(token)
