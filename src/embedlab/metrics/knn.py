"""Exact k-nearest-neighbour search with faiss, with ties broken by gallery index."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.metrics._inputs import ArrayLike, as_embeddings, check_distance

__all__ = ["knn"]


def _faiss_search(
    query: np.ndarray, gallery: np.ndarray, k: int, distance: str, use_gpu: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Raw faiss exact search; returns (distance-like values ascending, indices)."""
    import faiss

    faiss_metric = faiss.METRIC_INNER_PRODUCT if distance == "cosine" else faiss.METRIC_L2
    if use_gpu:
        res = faiss.StandardGpuResources()
        dist, idx = faiss.knn_gpu(res, query, gallery, k, metric=faiss_metric)
    else:
        dist, idx = faiss.knn(query, gallery, k, metric=faiss_metric)
    if distance == "cosine":
        dist = -dist  # larger inner product = closer
    return dist, idx


def knn(
    query: ArrayLike,
    gallery: ArrayLike | None,
    k: int,
    distance: str = "cosine",
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """Exact ``k`` nearest gallery items of every query (faiss flat search).

    Neighbours are ordered by distance (cosine: ``1 - cos``; euclidean: squared distance), ties by
    gallery index, which makes the lists deterministic: faiss returns tied items in an arbitrary
    order and may cut a group of ties at ``k``, so ``k`` plus a margin is requested, rows whose
    margin is exhausted by ties are searched again with a larger ``k``, and each row is re-sorted
    by (distance, index).

    Args:
        query: ``(Q, D)`` embeddings.
        gallery: ``(G, D)`` embeddings, or ``None`` to search within ``query``.
        k: number of neighbours (at most ``G``, or ``Q - 1`` with ``exclude_self``).
        distance: ``"cosine"`` or ``"euclidean"``.
        exclude_self: with ``gallery=None``, never return a query as its own neighbour.

    Returns:
        ``(distances, indices)``, both ``(Q, k)``, on the device of ``query``. faiss-gpu is used
        when it is installed and ``query`` lives on a CUDA device.
    """
    distance = check_distance(distance)
    q = as_embeddings(query, "query")
    device = q.device
    g = q if gallery is None else as_embeddings(gallery, "gallery", device)
    if g.shape[1] != q.shape[1]:
        raise ValueError(
            f"gallery: has dimension {g.shape[1]} but query has dimension {q.shape[1]}"
        )
    if exclude_self and gallery is not None:
        raise ValueError("exclude_self: only valid with gallery=None")
    num_g = g.shape[0]
    limit = num_g - 1 if exclude_self else num_g
    if not isinstance(k, int) or k < 1 or k > limit:
        raise ValueError(f"k: expected an integer in [1, {limit}], got {k!r}")
    if distance == "cosine":
        q = F.normalize(q, dim=1)
        g = F.normalize(g, dim=1)
    import faiss

    use_gpu = device.type == "cuda" and hasattr(faiss, "StandardGpuResources")
    qn = q.cpu().numpy()
    gn = g.cpu().numpy()
    n_self = 1 if exclude_self else 0
    out_d = np.empty((q.shape[0], k), dtype=np.float32)
    out_i = np.empty((q.shape[0], k), dtype=np.int64)
    todo = np.arange(q.shape[0])
    fetch = min(num_g, k + n_self + 8)
    while len(todo):
        dist, idx = _faiss_search(qn[todo], gn, fetch, distance, use_gpu)
        dist, idx = np.asarray(dist), np.asarray(idx).astype(np.int64)
        if exclude_self:
            is_self = idx == todo[:, None]
            dist = np.where(is_self, np.inf, dist)
            idx = np.where(is_self, np.iinfo(np.int64).max, idx)
        order = np.lexsort((idx, dist), axis=-1)
        dist = np.take_along_axis(dist, order, 1)
        idx = np.take_along_axis(idx, order, 1)
        # faiss's last returned distance; if it ties with the k-th, the tie group may continue
        # beyond what was fetched.
        last = np.asarray(_faiss_last(dist, idx))
        cut = last <= dist[:, k - 1]
        done = ~cut if fetch < num_g else np.ones(len(todo), dtype=bool)
        out_d[todo[done]] = dist[done, :k]
        out_i[todo[done]] = idx[done, :k]
        todo = todo[~done]
        fetch = min(num_g, 2 * fetch)
    dist_t = torch.from_numpy(out_d)
    if distance == "cosine":
        dist_t = 1.0 + dist_t  # 1 - cos
    return dist_t.to(device), torch.from_numpy(out_i).to(device)


def _faiss_last(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Largest finite distance returned per row (the boundary of what faiss fetched)."""
    finite = np.where((idx >= 0) & np.isfinite(dist), dist, -np.inf)
    return finite.max(axis=1)
