"""Retrieval and re-identification metrics: exact, memory-bounded and DDP-synchronised.

* :func:`evaluate` - functional entry point (Recall@k / CMC, mAP, MAP@R, R-precision,
  precision@1, mINP, optional NMI; leave-one-out or query/gallery; ReID camera protocol).
* :class:`RetrievalMetric` - ``torchmetrics`` wrapper used at validation.
* :func:`k_reciprocal_rerank`, :func:`average_query_expansion` - re-ranking.
* :func:`knn` - exact faiss k-nearest neighbours with ties broken by index.
* :func:`format_metrics_table` - a printable table of several evaluation results.
"""

from embedlab.metrics.knn import knn
from embedlab.metrics.rerank import (
    average_query_expansion,
    k_reciprocal_rerank,
    k_reciprocal_scores,
)
from embedlab.metrics.retrieval import evaluate
from embedlab.metrics.table import format_metrics_table
from embedlab.metrics.torchmetric import RetrievalMetric

__all__ = [
    "RetrievalMetric",
    "average_query_expansion",
    "evaluate",
    "format_metrics_table",
    "k_reciprocal_rerank",
    "k_reciprocal_scores",
    "knn",
]
