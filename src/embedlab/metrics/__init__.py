"""Retrieval and re-identification metrics: exact, memory-bounded and DDP-synchronised.

* :func:`evaluate` - functional entry point (leave-one-out or query/gallery; ReID camera
  protocol; optional NMI) with :class:`EvalOptions`.
* Metric objects (:mod:`embedlab.metrics.metrics_from_ranks`): any object with a ``name`` and
  ``__call__(ranks, num_positives)``; built-ins :class:`RecallAtK`, :class:`MeanAveragePrecision`
  (``map``), :class:`MAPAtR`, :class:`RPrecision`, :class:`PrecisionAt1`, :class:`MINP`,
  :class:`CMC`; :class:`OfficialAveragePrecision`, the ``map`` of ``convention="official"``
  (the Market-1501 / MARS MATLAB code).
* :class:`RetrievalEvaluator`, :class:`PersonSearchEvaluator` - ``torchmetrics`` wrappers used
  at validation and test (imported on first use of their names).
* :func:`k_reciprocal_rerank`, :func:`average_query_expansion` - re-ranking.
* :func:`knn` - exact faiss k-nearest neighbours with ties broken by index.
* :func:`person_search` - the person-search protocol (CUHK-SYSU): each query has its own gallery.
* :func:`verify` - pair verification (LFW's 10-fold protocol), accuracy, ROC, EER;
  :func:`set_distances` / :func:`verify_distances` for video pairs (YouTube Faces).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedlab.metrics._inputs import DISTANCES, Distance
from embedlab.metrics.knn import knn
from embedlab.metrics.metrics_from_ranks import (
    CMC,
    CONVENTIONS,
    MINP,
    PRIMARY_METRIC,
    Convention,
    MAPAtR,
    MeanAveragePrecision,
    OfficialAveragePrecision,
    PrecisionAt1,
    RankMetric,
    RecallAtK,
    RPrecision,
    default_metrics,
    for_convention,
    scalar_metrics,
)
from embedlab.metrics.person_search import PersonSearchProtocol, person_search
from embedlab.metrics.rerank import (
    average_query_expansion,
    k_reciprocal_rerank,
    k_reciprocal_scores,
)
from embedlab.metrics.retrieval import EvalOptions, MetricFn, evaluate
from embedlab.metrics.verification import pair_distances, set_distances, verify, verify_distances

if TYPE_CHECKING:
    from embedlab.metrics.evaluators import PersonSearchEvaluator, RetrievalEvaluator

# torchmetrics (which imports matplotlib when it is installed) only for the evaluators.
_LAZY = {"PersonSearchEvaluator", "RetrievalEvaluator"}


def __getattr__(name: str) -> Any:
    """The torchmetrics evaluators are imported on first access of their names."""
    if name in _LAZY:
        from embedlab.metrics import evaluators

        value = getattr(evaluators, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CMC",
    "CONVENTIONS",
    "DISTANCES",
    "MINP",
    "PRIMARY_METRIC",
    "Convention",
    "Distance",
    "EvalOptions",
    "MAPAtR",
    "MeanAveragePrecision",
    "MetricFn",
    "OfficialAveragePrecision",
    "PersonSearchEvaluator",
    "PersonSearchProtocol",
    "PrecisionAt1",
    "RPrecision",
    "RankMetric",
    "RecallAtK",
    "RetrievalEvaluator",
    "average_query_expansion",
    "default_metrics",
    "evaluate",
    "for_convention",
    "k_reciprocal_rerank",
    "k_reciprocal_scores",
    "knn",
    "pair_distances",
    "person_search",
    "set_distances",
    "verify",
    "verify_distances",
    "scalar_metrics",
]
