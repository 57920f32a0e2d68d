"""Retrieval metrics as objects: functions of the ranks of each query's positives.

A retrieval metric is any object with a ``name`` (``str``) and
``__call__(ranks, num_positives) -> Tensor``:

* ``ranks``: float64 tensor ``(Q, M)``, the 1-based ranks ``r_1 < r_2 < ... < r_R`` of each
  query's ``R`` positives in increasing order, padded with ``inf`` (``M`` is the largest ``R``);
* ``num_positives``: int64 tensor ``(Q,)``, ``R`` of each query (always at least 1 here: queries
  without a positive are skipped before any metric sees them);
* the result holds one value per query, ``(Q,)``, or one row per query for a curve
  (``(Q, L)``, e.g. :class:`CMC`); the reported value is its mean over the queries.

Subclass :class:`RankMetric` to configure a metric by ``class_path`` (``model.metrics``);
:func:`embedlab.metrics.evaluate` accepts any object of that shape. The definitions of the
built-ins are in :mod:`embedlab.metrics.retrieval`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor

from embedlab.options import CONVENTIONS, PRIMARY_METRIC, Convention

__all__ = [
    "CMC",
    "CONVENTIONS",
    "MINP",
    "PRIMARY_METRIC",
    "MAPAtR",
    "Convention",
    "MeanAveragePrecision",
    "OfficialAveragePrecision",
    "PrecisionAt1",
    "RPrecision",
    "RankMetric",
    "RecallAtK",
    "default_metrics",
    "for_convention",
    "scalar_metrics",
]


MetricT = TypeVar("MetricT")


class RankMetric(ABC):
    """Base class of the built-in metrics (see the module docstring for the interface)."""

    name: str

    @abstractmethod
    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        """Per-query values from the ranks ``(Q, M)`` of the positives and their number ``(Q,)``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _positions(ranks: Tensor) -> Tensor:
    """``j`` = 1..M for the j-th positive of every query, shape ``(1, M)``."""
    return torch.arange(1, ranks.shape[1] + 1, dtype=ranks.dtype, device=ranks.device)[None, :]


class RecallAtK(RankMetric):
    """``recall@k = [r_1 <= k]``: a positive among the first ``k`` (CMC at rank ``k``)."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"RecallAtK.k: expected a positive integer, got {k!r}")
        self.k = k
        self.name = f"recall@{k}"

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        return (ranks[:, 0] <= self.k).to(torch.float64)


class PrecisionAt1(RankMetric):
    """``precision@1 = [r_1 = 1]``."""

    name = "precision@1"

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        return (ranks[:, 0] == 1).to(torch.float64)


class MeanAveragePrecision(RankMetric):
    """``AP = (1/R) * sum_j j / r_j`` over the whole ranking; reported as ``map``."""

    name = "map"

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        return (_positions(ranks) / ranks).sum(1) / num_positives


class OfficialAveragePrecision(RankMetric):
    """The AP of the Market-1501 and MARS MATLAB evaluation code (``compute_AP.m``); ``map``.

    That code integrates the precision-recall curve with the trapezoidal rule over the ranking
    with junk removed. Only the positives move the recall (by ``1/R`` each), so
    ``AP = (1/R) * sum_j (p_j + p'_j) / 2`` with ``p_j = j / r_j`` and ``p'_j`` the precision
    one position earlier: ``(j - 1) / (r_j - 1)``, or ``1`` when ``r_j = 1``.
    """

    name = "map"

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        j = _positions(ranks)
        before = torch.where(ranks > 1, (j - 1) / (ranks - 1).clamp(min=1), 1.0)
        terms = 0.5 * (j / ranks + before)
        # padding (rank inf) gives j / inf = 0 and (j - 1) / inf = 0: no term
        return terms.sum(1) / num_positives


class MAPAtR(RankMetric):
    """``MAP@R = (1/R) * sum_{j : r_j <= R} j / r_j`` (Musgrave et al., ECCV 2020)."""

    name = PRIMARY_METRIC

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        within = ranks <= num_positives[:, None]
        return torch.where(within, _positions(ranks) / ranks, 0.0).sum(1) / num_positives


class RPrecision(RankMetric):
    """``R-precision = |{j : r_j <= R}| / R``."""

    name = "r_precision"

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        return (ranks <= num_positives[:, None]).sum(1, dtype=torch.float64) / num_positives


class MINP(RankMetric):
    """``INP = R / r_R`` (Ye et al., TPAMI 2021); reported as ``minp``."""

    name = "minp"

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        last = ranks.gather(1, (num_positives - 1).clamp(min=0)[:, None])[:, 0]
        return num_positives / last


class CMC(RankMetric):
    """The CMC curve ``cmc[k-1] = [r_1 <= k]`` for ``k = 1..max_rank`` (one row per query)."""

    name = "cmc"

    def __init__(self, max_rank: int = 50) -> None:
        if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1:
            raise ValueError(f"CMC.max_rank: expected a positive integer, got {max_rank!r}")
        self.max_rank = max_rank

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        ks = torch.arange(1, self.max_rank + 1, dtype=ranks.dtype, device=ranks.device)
        return (ranks[:, :1] <= ks[None, :]).to(torch.float64)


def default_metrics(ks: Sequence[int] = (1, 5, 10), max_rank: int = 50) -> list[RankMetric]:
    """The built-ins: ``recall@k`` for each of ``ks``, ``map``, ``map@r``, ``r_precision``,
    ``precision@1``, ``minp`` and the ``cmc`` curve up to ``max_rank``."""
    return [*(RecallAtK(int(k)) for k in ks), *scalar_metrics(), CMC(max_rank)]


def for_convention(
    metrics: Sequence[MetricT], convention: Convention
) -> list[MetricT | RankMetric]:
    """``metrics`` as ``convention`` computes them: ``official`` replaces the built-in ``map``
    (:class:`MeanAveragePrecision`) by :class:`OfficialAveragePrecision`; everything else,
    and every metric under ``torchreid``, is kept as it is."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {list(CONVENTIONS)}, got {convention!r}")
    if convention == "torchreid":
        return list(metrics)
    return [OfficialAveragePrecision() if type(m) is MeanAveragePrecision else m for m in metrics]


def scalar_metrics() -> list[RankMetric]:
    """The built-ins that do not depend on an option: ``map`` ... ``minp``."""
    return [MeanAveragePrecision(), MAPAtR(), RPrecision(), PrecisionAt1(), MINP()]
