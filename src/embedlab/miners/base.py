"""The miner interface shared by every triplet-based loss of embedlab.

A miner looks at the batch's distance matrix (computed once by the loss with
:func:`embedlab.distances.pairwise_distance`, and handed over detached) and the
labels, and returns index tensors naming the (anchor, positive, negative) triplets
the loss sees, as a :class:`TripletSelection`. Mining is pure selection: it runs
without autograd, and the loss gathers the chosen distances from the matrix itself
(:meth:`TripletSelection.distances`), so gradients flow through those entries only.

Everything is vectorised: one row per anchor or per anchor–positive pair, and for
batch-all a dense ``[pairs, N]`` block of every negative with a validity mask, never
a Python list of triplets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TripletMiner", "TripletSelection", "positive_pairs"]


@dataclass(frozen=True)
class TripletSelection:
    """Triplets chosen by a miner, as batch indices.

    Attributes:
        anchor: [R] long, the anchor of each row.
        positive: [R] long, its positive.
        negative: [R] long, its negative; or ``None`` for "every sample of the batch"
            (batch-all), the real negatives being those where ``valid`` is True.
        valid: bool, [R] (or [R, N] when ``negative`` is None): True where the row is
            a real triplet. Invalid rows still hold in-range indices.
        d_ap, d_an: optionally, the distances d(a, p) and d(a, n) of each row when the
            miner already has them (batch-hard; 0 on invalid rows); :meth:`distances`
            returns them.
    """

    anchor: Tensor
    positive: Tensor
    negative: Tensor | None
    valid: Tensor
    d_ap: Tensor | None = None
    d_an: Tensor | None = None

    def distances(self, dist: Tensor) -> tuple[Tensor, Tensor]:
        """d(a, p) and d(a, n) gathered from ``dist``: [R] and [R] (or [R, 1] and [R, N])."""
        if self.d_ap is not None and self.d_an is not None:
            return self.d_ap, self.d_an
        d_ap = dist[self.anchor, self.positive]
        if self.negative is None:
            return d_ap[:, None], dist[self.anchor]
        return d_ap, dist[self.anchor, self.negative]

    def scatter(self, g_ap: Tensor, g_an: Tensor, n: int) -> Tensor:
        """The [n, n] matrix with ``g_ap`` added at (a, p) and ``g_an`` at (a, n).

        The inverse of :meth:`distances`: it turns gradients with respect to the
        gathered distances into a gradient with respect to the distance matrix.
        ``g_ap`` may have the shape of the terms ([R, N] for batch-all); it is summed
        per row.
        """
        grad = g_an.new_zeros(n, n)
        per_row = g_ap if g_ap.dim() == 1 else g_ap.reshape(len(self.anchor), -1).sum(1)
        grad.index_put_((self.anchor, self.positive), per_row, accumulate=True)
        if self.negative is None:
            return grad.index_add_(0, self.anchor, g_an)
        return grad.index_put_((self.anchor, self.negative), g_an, accumulate=True)


class TripletMiner(ABC):
    """Base class of the triplet miners (``BatchHardMiner``, ``BatchAllMiner``, ...).

    Subclasses implement :meth:`__call__`; they have typed constructors so that
    configs can build them with ``class_path``.
    """

    @abstractmethod
    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        """Select triplets.

        Args:
            dist: [N, N] distance matrix of the batch (euclidean), without gradient.
            labels: [N] integer labels.
            embedding_dim: dimension D of the embeddings (only distance-weighted
                sampling needs it).
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def positive_pairs(positive: Tensor) -> tuple[Tensor, Tensor]:
    """Anchor and positive indices of every True entry of a [N, N] positive mask."""
    anchor, pos = torch.nonzero(positive, as_tuple=True)
    return anchor, pos
