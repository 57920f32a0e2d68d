"""``torchmetrics`` wrapper around :func:`embedlab.metrics.evaluate` for validation loops.

Every rank accumulates the embeddings it sees together with their dataset indices; states are
list states reduced by concatenation. Before computing, items are de-duplicated by dataset index
(the first occurrence is kept: a ``DistributedSampler`` pads the last shard with repeats of the
first samples) and sorted by index, so the evaluation sees exactly the single-process order and the
result is identical on 1 or N ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from embedlab.metrics.metrics_from_ranks import default_metrics
from embedlab.metrics.person_search import (
    PersonSearchProtocol,
    _num_gallery,
    person_search,
    person_search_metrics,
)
from embedlab.metrics.retrieval import EvalOptions, MetricFn, evaluate

__all__ = ["PersonSearchEvaluator", "RetrievalEvaluator"]


def _cat(state: Tensor | list[Tensor]) -> Tensor:
    """Concatenate a list state (after a DDP sync it may already be a single tensor)."""
    if isinstance(state, Tensor):
        return state
    if len(state) == 0:
        return torch.empty(0)
    return dim_zero_cat(state)


class RetrievalEvaluator(Metric):
    """Retrieval / ReID metrics over a whole evaluation set (see :func:`evaluate`).

    Args:
        metrics: metric objects (default: the built-ins, :func:`default_metrics`).
        options: how to rank (:class:`EvalOptions`; default: cosine, chunks of 1024 queries).
        kwargs: passed on to ``torchmetrics.Metric``.

    Each item carries flags saying whether it is a query and/or a gallery item:

    * if every item is both, retrieval is leave-one-out within the set (CUB, Cars, SOP);
    * otherwise queries are ranked against gallery items, and a gallery item that is the query
      itself (same dataset index) is ignored.

    Cameras equal to ``-1`` mean "unknown"; if every camera is ``-1`` no camera filtering is done,
    otherwise the ReID protocol applies.

    ``compute()`` returns the whole :func:`evaluate` dict (floats, and arrays for curves such as
    ``cmc``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    embeddings: list[Tensor] | Tensor
    labels: list[Tensor] | Tensor
    cameras: list[Tensor] | Tensor
    indices: list[Tensor] | Tensor
    flags: list[Tensor] | Tensor

    def __init__(
        self,
        metrics: Sequence[MetricFn] | None = None,
        options: EvalOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics = list(default_metrics() if metrics is None else metrics)
        self.options = options if options is not None else EvalOptions(chunk_size=1024)
        for name in ("embeddings", "labels", "cameras", "indices", "flags"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(  # type: ignore[override]
        self,
        embeddings: Tensor,
        labels: Tensor,
        cameras: Tensor | None = None,
        indices: Tensor | None = None,
        is_query: Tensor | None = None,
        is_gallery: Tensor | None = None,
    ) -> None:
        """Add a batch: ``(B, D)`` embeddings and ``(B,)`` labels, cameras, dataset indices, flags.

        ``cameras=None`` means unknown (``-1``); ``is_query``/``is_gallery=None`` mean ``True``.
        ``indices`` are required for exact de-duplication under DDP; without them every item is
        treated as distinct and numbered in arrival order (single process only).
        """
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings: expected shape (B, D), got {tuple(embeddings.shape)}")
        n = embeddings.shape[0]
        device = embeddings.device

        def column(x: Tensor | None, name: str, fill: int) -> Tensor:
            if x is None:
                return torch.full((n,), fill, dtype=torch.int64, device=device)
            x = torch.as_tensor(x, device=device)
            if x.ndim != 1 or x.shape[0] != n:
                raise ValueError(f"{name}: expected shape ({n},), got {tuple(x.shape)}")
            return x.detach().to(torch.int64)

        labels_t = column(labels, "labels", 0)
        cameras_t = column(cameras, "cameras", -1)
        if indices is None:
            seen = (
                sum(int(t.shape[0]) for t in self.indices) if isinstance(self.indices, list) else 0
            )
            indices_t = torch.arange(seen, seen + n, device=device, dtype=torch.int64)
        else:
            indices_t = column(indices, "indices", 0)
        query_t = column(is_query, "is_query", 1) != 0
        gallery_t = column(is_gallery, "is_gallery", 1) != 0
        flags = query_t.to(torch.int64) | (gallery_t.to(torch.int64) << 1)
        assert isinstance(self.embeddings, list)
        self.embeddings.append(embeddings.detach().float())
        assert isinstance(self.labels, list) and isinstance(self.cameras, list)
        self.labels.append(labels_t)
        self.cameras.append(cameras_t)
        assert isinstance(self.indices, list) and isinstance(self.flags, list)
        self.indices.append(indices_t)
        self.flags.append(flags)

    def gathered(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Embeddings, labels, cameras, indices and flags, one per dataset index, sorted by it."""
        emb = _cat(self.embeddings)
        labels = _cat(self.labels)
        cams = _cat(self.cameras)
        idx = _cat(self.indices)
        flags = _cat(self.flags)
        if idx.numel() == 0:
            return emb, labels, cams, idx, flags
        # Keep the first occurrence of every index, then order by index.
        order = torch.sort(idx, stable=True).indices
        sorted_idx = idx[order]
        first = torch.ones_like(sorted_idx, dtype=torch.bool)
        first[1:] = sorted_idx[1:] != sorted_idx[:-1]
        keep = order[first]
        return emb[keep], labels[keep], cams[keep], idx[keep], flags[keep]

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        """The :func:`evaluate` result over everything accumulated on all ranks."""
        emb, labels, cams, idx, flags = self.gathered()
        if emb.numel() == 0:
            raise ValueError("RetrievalEvaluator.compute: no embeddings were accumulated")
        is_query = (flags & 1) != 0
        is_gallery = (flags & 2) != 0
        cams_arg = None if bool((cams == -1).all()) else cams
        common: dict[str, Any] = {"metrics": self.metrics, "options": self.options}
        if bool((is_query & is_gallery).all()):
            return evaluate(emb, labels, query_cams=cams_arg, **common)
        if not bool(is_query.any()):
            raise ValueError("RetrievalEvaluator.compute: no item is flagged as a query")
        if not bool(is_gallery.any()):
            raise ValueError("RetrievalEvaluator.compute: no item is flagged as a gallery item")
        return evaluate(
            emb[is_query],
            labels[is_query],
            emb[is_gallery],
            labels[is_gallery],
            query_cams=None if cams_arg is None else cams_arg[is_query],
            gallery_cams=None if cams_arg is None else cams_arg[is_gallery],
            query_ids=idx[is_query],
            gallery_ids=idx[is_gallery],
            **common,
        )


class PersonSearchEvaluator(RetrievalEvaluator):
    """:func:`person_search` over a whole evaluation set, accumulated batch by batch.

    The items are numbered as the data module's evaluation set numbers them: the protocol's
    queries first (``protocol.queries`` order), then its gallery items (``protocol.gallery``
    order); items flagged as queries are the queries. Accumulation, de-duplication and DDP
    reduction are :class:`RetrievalEvaluator`'s; only ``compute()`` differs.

    Args:
        protocol: each query's own gallery, positives and ``num_gt``.
        metrics: default :func:`person_search_metrics` (``map``, ``recall@1/5/10``).
        options: ``distance`` and ``chunk_size`` are used; ``rerank`` and ``convention`` do not
            apply to person search.
    """

    def __init__(
        self,
        protocol: PersonSearchProtocol,
        metrics: Sequence[MetricFn] | None = None,
        options: EvalOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            list(person_search_metrics() if metrics is None else metrics), options, **kwargs
        )
        self.protocol = protocol

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        emb, _, _, _, flags = self.gathered()
        is_query = (flags & 1) != 0
        query, gallery = emb[is_query], emb[~is_query]
        expected = (self.protocol.num_queries, _num_gallery(self.protocol))
        if (query.shape[0], gallery.shape[0]) != expected:
            raise ValueError(
                f"PersonSearchEvaluator: {query.shape[0]} queries and {gallery.shape[0]} gallery "
                f"items were accumulated; the protocol has {expected[0]} and {expected[1]}"
            )
        results = person_search(
            query,
            gallery,
            self.protocol,
            metrics=self.metrics,
            distance=self.options.distance,
            chunk_size=self.options.chunk_size,
        )
        return results
