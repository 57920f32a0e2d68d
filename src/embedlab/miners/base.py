"""The miner interface shared by every triplet-based loss of embedlab.

Miners select, losses compute. A miner looks at the batch's distance matrix (detached)
and the labels, under ``no_grad``, and returns a :class:`TripletSelection`: index tensors
and masks of **fixed shape** ([N, J], one row per anchor) naming the triplets. The loss
then gathers the chosen distances from its own differentiable matrix
(:meth:`TripletSelection.distances`), so gradients flow through those entries only, with
ordinary autograd. Nothing depends on the data's values for its shape, so no host
synchronisation is needed and ``torch.compile`` can trace the whole loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PairMiner",
    "PairSelection",
    "TripletMiner",
    "TripletSelection",
    "hinge_sum",
    "sorted_negatives",
]


@dataclass(frozen=True)
class TripletSelection:
    """Triplets chosen by a miner. Row a of every tensor belongs to anchor a.

    Attributes:
        positive: [N, J] long, the positive of each of the anchor's J slots.
        negative: [N, J] long, the negative of each slot; ``None`` for batch-all, where
            each slot pairs its positive with **every** negative of the anchor.
        valid: [N, J] bool, True where the slot is a real triplet (for batch-all: a real
            anchor–positive pair of an anchor that has negatives).
        negatives: [N, M] bool, batch-all only: the anchor's negatives.
    """

    positive: Tensor
    negative: Tensor | None
    valid: Tensor
    negatives: Tensor | None = None

    def distances(self, dist: Tensor) -> tuple[Tensor, Tensor]:
        """d(a, p) [N, J] and d(a, n) [N, J] gathered from ``dist`` (for batch-all, d(a, ·) [N, N])."""
        d_ap = dist.gather(1, self.positive)
        d_an = dist if self.negative is None else dist.gather(1, self.negative)
        return d_ap, d_an

    def count(self) -> Tensor:
        """The number of triplets (a 0-dim tensor)."""
        valid = self.valid.to(torch.int64)
        if self.negatives is None:
            return valid.sum()
        return (valid.sum(1) * self.negatives.sum(1)).sum()


@dataclass(frozen=True)
class PairSelection:
    """Pairs chosen by a pair miner: [N, N] boolean masks over (anchor, other) pairs.

    Attributes:
        positive: True where (a, j) is a kept positive pair (same label, j ≠ a).
        negative: True where (a, j) is a kept negative pair.
    """

    positive: Tensor
    negative: Tensor


class PairMiner(ABC):
    """Base class of the pair miners (``MultiSimilarityMiner``): which pairs a pair-based
    loss (multi-similarity, contrastive, circle) keeps."""

    @abstractmethod
    def __call__(
        self, sim: Tensor, labels: Tensor, ref_labels: Tensor | None = None
    ) -> PairSelection:
        """Select pairs from the [N, M] cosine similarities (detached; columns as for
        ``TripletMiner``) and the labels."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class TripletMiner(ABC):
    """Base class of the triplet miners (``BatchHardMiner``, ``BatchAllMiner``, ...).

    Subclasses implement :meth:`__call__`; they have typed constructors so that configs
    can build them with ``class_path``.
    """

    @abstractmethod
    def __call__(
        self,
        dist: Tensor,
        labels: Tensor,
        embedding_dim: int | None = None,
        ref_labels: Tensor | None = None,
    ) -> TripletSelection:
        """Select triplets.

        Args:
            dist: [N, M] euclidean distances, detached: the batch against itself (M = N),
                or against itself followed by R references (M = N + R).
            labels: [N] integer labels.
            embedding_dim: dimension D of the embeddings (only distance-weighted sampling
                needs it).
            ref_labels: [R] labels of the references, if any (only passed when given).
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def sorted_negatives(dist: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's negative distances in increasing order (non-negatives last, as ``inf``).

    Returns ``(values, columns)``, both [N, N]: ``columns`` maps a sorted position back to
    the batch index.
    """
    return torch.where(negative, dist, torch.inf).sort(dim=1)


def hinge_sum(u: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Σ_n mask[a, n]·[u[a, j] − v[a, n]]₊ and the number of its non-zero terms, both [N, J].

    The batch-all sum over every (anchor, positive, negative) triplet in O(N² log N) instead
    of an [N, N, N] block: with the masked v of each row sorted, the active terms of
    u[a, j] are the c = #{v < u} smallest, whose sum is a prefix sum, so the hinge sum is
    c·u − Σ_{i<c} v_(i). Differentiable (twice) in u and v: it is the same piecewise-linear
    function as the explicit sum.
    """
    values, order = torch.where(mask, v, torch.inf).sort(dim=1)
    finite = mask.gather(1, order)
    values = torch.where(finite, values, 0.0)
    prefix = torch.cat([values.new_zeros(len(values), 1), values.cumsum(1)], dim=1)
    with torch.no_grad():
        # #{n : v[a, n] < u[a, j]}: masked entries sort last (their key is +inf)
        key = torch.where(finite, values, torch.inf).contiguous()
        count = torch.searchsorted(key, u.detach().contiguous(), right=False)
    return count.to(u.dtype) * u - prefix.gather(1, count), count
