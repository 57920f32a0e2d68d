"""The person-search protocol (CUHK-SYSU, Xiao et al. 2017): every query has its own gallery.

Protocol
--------
Query ``q`` is one person box; its gallery is the person boxes of its own list of scene images
(``TestG50.mat``: 50 scenes per query, ``TestG100.mat``: 100, ...). ``num_gt[q]`` counts the
gallery scenes that contain the query person (the scenes with a ground-truth box); in each such
scene one gallery box is that person's (the *positive*), unless none could be matched. ``q`` ranks
its own gallery by similarity (ties broken by gallery index, as everywhere in embedlab); with
``r_1 < ... < r_R`` the ranks of the ``R <= num_gt`` positives found:

* ``AP = (1 / num_gt) * sum_j j / r_j``: average precision scaled by the recall ``R / num_gt``
  (a ground-truth box without a matching gallery box counts as a positive never retrieved), as the
  official evaluation does (``average_precision_score * recall_rate``, ShuangLI59/person_search,
  repeated by SeqNet and its successors);
* ``top-k = [r_1 <= k]`` (``recall@k``).

Both are embedlab's metric objects (:class:`~embedlab.metrics.MeanAveragePrecision`,
:class:`~embedlab.metrics.RecallAtK`) applied to ranks padded with ``inf`` up to ``num_gt``, and
the ranks come from :func:`embedlab.metrics.positive_ranks.rank_positives` over the union of the
galleries with every item outside a query's own gallery masked out; reported values are means over
the queries (a query with ``num_gt = 0`` is skipped and counted in ``num_skipped_queries``).

On crops (ground-truth boxes, what ``embedlab data prepare cuhksysu`` writes) this is the **upper
bound of the detection-based protocol**: there is no detector, hence no missed or misplaced
detection and no IoU matching at evaluation time; the gallery boxes are the annotated person boxes
of the gallery scenes (``Images.mat``), the positives the ones that are the query person's. The
one difference from the official code besides the detector: ties are broken by gallery index,
whereas scikit-learn's average precision averages over tied scores.

From Python: ``protocol = CUHKSYSU(root).protocol(50)``, embed ``protocol.queries.path`` and
``protocol.gallery.path`` (paths relative to ``root``, e.g. with ``embedlab embed``), then
``person_search(query_embeddings, gallery_embeddings, protocol)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from embedlab.metrics._inputs import ArrayLike, Distance, as_embeddings, check_distance
from embedlab.metrics.metrics_from_ranks import MeanAveragePrecision, RecallAtK
from embedlab.metrics.positive_ranks import PositiveRanks, ScoreFn, rank_positives
from embedlab.metrics.retrieval import MetricFn, check_metrics, similarity_fn

# PersonSearchEvaluator, the torchmetrics wrapper, lives in embedlab.metrics.evaluators.
__all__ = [
    "PersonSearchProtocol",
    "person_search",
    "person_search_metrics",
]


@dataclass(frozen=True)
class PersonSearchProtocol:
    """Per-query galleries over one shared list of gallery items.

    Args:
        galleries: for each query, the gallery indices (into the gallery items) of its gallery.
        positives: for each query, the gallery indices of its positives (a subset of its gallery).
        num_gt: for each query, how many positives the protocol says there are (at least
            ``len(positives[q])``; more when some ground truth has no gallery item).
        queries: optional table of the queries (``path, label, scene``), one row per query.
        gallery: optional table of the gallery items (``path, label, scene``).
    """

    galleries: Sequence[np.ndarray]
    positives: Sequence[np.ndarray]
    num_gt: np.ndarray
    queries: pd.DataFrame | None = field(default=None, compare=False)
    gallery: pd.DataFrame | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        q = len(self.galleries)
        if len(self.positives) != q or len(self.num_gt) != q:
            raise ValueError(
                f"PersonSearchProtocol: {q} galleries, {len(self.positives)} positive lists and "
                f"{len(self.num_gt)} num_gt: expected one of each per query"
            )
        for i, (items, pos) in enumerate(zip(self.galleries, self.positives, strict=True)):
            if not np.isin(pos, items).all():
                raise ValueError(
                    f"PersonSearchProtocol: query {i} has positives outside its gallery"
                )
            if len(np.unique(pos)) < len(pos) or len(pos) > int(self.num_gt[i]):
                raise ValueError(
                    f"PersonSearchProtocol: query {i} has {len(pos)} positives (repeated, or "
                    f"more than its num_gt {int(self.num_gt[i])})"
                )

    @property
    def num_queries(self) -> int:
        return len(self.galleries)


def person_search_metrics(ks: Sequence[int] = (1, 5, 10)) -> list[MetricFn]:
    """``map`` and ``recall@k`` (top-k) for each of ``ks``: what person-search papers report."""
    return [MeanAveragePrecision(), *(RecallAtK(int(k)) for k in ks)]


class _OwnGalleryBlocks:
    """Similarity blocks of a group of queries against all gallery items, ``-inf`` outside each
    query's own gallery (so those items never precede a positive)."""

    thread_safe = True

    def __init__(self, inner: ScoreFn, galleries: Sequence[np.ndarray], num_items: int) -> None:
        self.inner = inner
        self.num_items = num_items
        self.lengths = np.array([len(g) for g in galleries], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.members = (
            np.concatenate([np.asarray(g, dtype=np.int64) for g in galleries])
            if galleries
            else np.zeros(0, np.int64)
        )

    def __call__(self, start: int, stop: int) -> Tensor:
        block = self.inner(start, stop)
        outside = torch.ones(block.shape, dtype=torch.bool, device=block.device)
        lo, hi = self.offsets[start], self.offsets[stop]
        rows = np.repeat(np.arange(stop - start), self.lengths[start:stop])
        cols = self.members[lo:hi]
        outside[
            torch.from_numpy(rows).to(block.device), torch.from_numpy(cols).to(block.device)
        ] = False
        return block.masked_fill_(outside, float("-inf"))


def _rounds(positives: Sequence[np.ndarray], num_items: int) -> list[np.ndarray]:
    """Groups of queries in which no gallery item is a positive of two queries (usually one)."""
    owner: list[np.ndarray] = []
    rounds: list[list[int]] = []
    for q, pos in enumerate(positives):
        for r, taken in enumerate(owner):
            if not taken[pos].any():
                taken[pos] = True
                rounds[r].append(q)
                break
        else:
            taken = np.zeros(num_items, dtype=bool)
            taken[pos] = True
            owner.append(taken)
            rounds.append([q])
    return [np.asarray(r, dtype=np.int64) for r in rounds]


def person_search(
    query: ArrayLike,
    gallery: ArrayLike,
    protocol: PersonSearchProtocol,
    *,
    metrics: Sequence[MetricFn] | None = None,
    distance: Distance = "cosine",
    chunk_size: int | None = None,
    return_per_query: bool = False,
) -> dict[str, Any]:
    """Evaluate person search with per-query galleries (see the module docstring).

    Args:
        query: ``(Q, D)`` query embeddings, one per protocol query.
        gallery: ``(G, D)`` embeddings of the gallery items the protocol indexes.
        protocol: the galleries, positives and ``num_gt`` of every query.
        metrics: metric objects (default :func:`person_search_metrics`: ``map``, ``recall@1/5/10``).
        distance: ``"cosine"`` or ``"euclidean"``.
        chunk_size: queries per similarity block (results do not depend on it).
        return_per_query: also return ``per_query``: ``num_gt``, the padded ``ranks`` and each
            metric's per-query values (NaN for skipped queries).

    Returns:
        One entry per metric (mean over the queries with ``num_gt > 0``), ``num_valid_queries``
        and ``num_skipped_queries``.
    """
    metrics = list(person_search_metrics() if metrics is None else metrics)
    check_metrics(metrics)
    check_distance(distance)
    q = as_embeddings(query, "query")
    g = as_embeddings(gallery, "gallery", q.device)
    if g.shape[1] != q.shape[1]:
        raise ValueError(
            f"gallery: has dimension {g.shape[1]} but query has dimension {q.shape[1]}"
        )
    if q.shape[0] != protocol.num_queries:
        raise ValueError(
            f"query: {q.shape[0]} embeddings for the protocol's {protocol.num_queries} queries"
        )
    for i, items in enumerate(protocol.galleries):
        if len(items) and (int(np.min(items)) < 0 or int(np.max(items)) >= g.shape[0]):
            raise ValueError(f"protocol: query {i}'s gallery indexes beyond the {g.shape[0]} items")
    num_gt = np.asarray(protocol.num_gt, dtype=np.int64)
    num_q, num_g = q.shape[0], g.shape[0]
    found: list[np.ndarray] = [np.zeros(0)] * num_q
    for group in _rounds(protocol.positives, num_g):
        labels = torch.full((num_g,), -1, dtype=torch.int64)
        for local, qi in enumerate(group):
            labels[torch.from_numpy(np.asarray(protocol.positives[qi], dtype=np.int64))] = local
        score = _OwnGalleryBlocks(
            similarity_fn(q[torch.from_numpy(group)], g, distance),
            [protocol.galleries[qi] for qi in group],
            num_g,
        )
        ranks = rank_positives(
            score, len(group), torch.arange(len(group)), labels, chunk_size=chunk_size
        )
        for local, qi in enumerate(group):
            n = int(ranks.num_positives[local])
            found[qi] = ranks.ranks[local, :n].numpy()
    width = max(1, int(num_gt.max(initial=0)))
    padded = np.full((num_q, width), np.inf)
    for qi, r in enumerate(found):
        padded[qi, : len(r)] = r
    valid = num_gt > 0
    scored = PositiveRanks(torch.from_numpy(padded[valid]), torch.from_numpy(num_gt[valid]))
    out: dict[str, Any] = {}
    per_query: dict[str, np.ndarray] = {"num_gt": num_gt, "ranks": padded}
    for metric in metrics:
        values = torch.as_tensor(metric(scored.ranks, scored.num_positives)).to(torch.float64)
        if values.ndim == 0 or values.shape[0] != int(valid.sum()):
            raise ValueError(
                f"metric {metric.name!r}: returned shape {tuple(values.shape)}, expected one "
                f"value (or row) per query"
            )
        mean = values.mean(0) if len(values) else torch.zeros(values.shape[1:], dtype=torch.float64)
        out[metric.name] = float(mean) if mean.ndim == 0 else mean.numpy()
        full = np.full((num_q, *values.shape[1:]), np.nan)
        full[valid] = values.numpy()
        per_query[metric.name] = full
    out["num_valid_queries"] = int(valid.sum())
    out["num_skipped_queries"] = int(num_q - valid.sum())
    if return_per_query:
        out["per_query"] = per_query
    return out


def _num_gallery(protocol: PersonSearchProtocol) -> int:
    """The number of gallery items: the gallery table's rows, else one past the largest index."""
    if protocol.gallery is not None:
        return len(protocol.gallery)
    return 1 + max((int(np.max(g)) for g in protocol.galleries if len(g)), default=-1)
