"""The miner interface shared by every triplet-based loss of embedlab.

A miner looks at the batch's distance matrix (computed once by the loss with
:func:`embedlab.distances.pairwise_distance`) and the labels, and decides which
(anchor, positive, negative) triplets the loss sees.

It does not return index lists. It returns a :class:`TripletSelection`: the selected
distances themselves, gathered from the distance matrix (so gradients flow back to
the embeddings through them), laid out as a dense block of rows, one row per anchor
or per anchor–positive pair, with a boolean mask of the terms that exist. A loss
applies its formula elementwise to ``pos_dist`` and ``neg_dist`` (which broadcast
together), keeps the ``valid`` terms and averages them. This keeps batch-all mining
a dense ``[pairs, N]`` block instead of a list of hundreds of thousands of triplets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TripletMiner", "TripletSelection", "positive_pairs"]


@dataclass(frozen=True)
class TripletSelection:
    """Triplets chosen by a miner, as distances.

    Attributes:
        anchor: [R] long, batch index of the anchor of each row.
        pos_dist: d(a, p) of each row, shape [R] or [R, 1].
        neg_dist: d(a, n), shape [R] (one negative per row) or [R, C] (several).
        valid: bool, the broadcast shape of ``pos_dist`` and ``neg_dist``: True where
            the term is a real triplet. Invalid entries hold finite dummy distances.
    """

    anchor: Tensor
    pos_dist: Tensor
    neg_dist: Tensor
    valid: Tensor


class TripletMiner(ABC):
    """Base class of the triplet miners (``BatchHardMiner``, ``BatchAllMiner``, ...).

    Subclasses implement :meth:`__call__`; they are plain, stateless-looking objects
    with typed constructors so that configs can build them with ``class_path``.
    """

    @abstractmethod
    def __call__(
        self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
    ) -> TripletSelection:
        """Select triplets.

        Args:
            dist: [N, N] distance matrix of the batch (euclidean unless a loss says otherwise).
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
