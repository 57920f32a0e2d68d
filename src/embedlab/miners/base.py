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
    """

    anchor: Tensor
    positive: Tensor
    negative: Tensor | None
    valid: Tensor

    def distances(self, dist: Tensor) -> tuple[Tensor, Tensor]:
        """d(a, p) and d(a, n) gathered from ``dist``: [R] and [R] (or [R, 1] and [R, N])."""
        d_ap = dist[self.anchor, self.positive]
        if self.negative is None:
            return d_ap[:, None], dist[self.anchor]
        return d_ap, dist[self.anchor, self.negative]


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
