"""k-reciprocal re-ranking and average query expansion, without an all-pairs matrix in memory.

k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), over all items ``X = query + gallery`` (or the query set alone in
leave-one-out mode), with ``d`` the squared Euclidean distance (of L2-normalised embeddings for
``distance="cosine"``):

1. ``N(i, k)``: the ``k`` nearest items of ``i`` (itself included), ties by index;
   ``m_i = max_j d(i, j)``.
2. ``R(i, k) = {j in N(i, k+1) : i in N(j, k+1)}`` (k-reciprocal neighbours).
3. ``R*(i)``: ``R(i, k1)`` united with every ``R(c, round(k1/2))``, ``c in R(i, k1)``, that shares more
   than two thirds of its elements with ``R(i, k1)``.
4. ``V[i, j] = exp(-d(i, j) / m_i)`` for ``j in R*(i)``, rows normalised to sum 1; then local query
   expansion ``V[i] <- mean of V[j] for j in N(i, k2)``.
5. Jaccard distance ``J(i, j) = 1 - S / (2 - S)`` with ``S = sum_k min(V[i, k], V[j, k])``.
6. Final distance ``(1 - lambda) * J(i, j) + lambda * d(i, j) / m_i``.

Only the ``N x (k1 + 1)`` neighbour lists and the sparse ``V`` are kept; the all-pairs pass that finds
neighbours and ``m_i`` and the final query x gallery distances are computed in chunks (time is
``O(N^2 D)`` as in the original formulation, memory ``O(N k1^2 + chunk * N)``).

Average query expansion: each query is replaced by the mean of itself and its ``n`` nearest gallery
items (found with :func:`embedlab.metrics.knn`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.metrics._inputs import ArrayLike, as_embeddings, check_distance
from embedlab.metrics.knn import knn

if TYPE_CHECKING:
    import scipy.sparse as sp
from embedlab.metrics.positive_ranks import DEFAULT_BLOCK_ELEMENTS, ScoreFn, float_order_key

#: Pairs of embeddings gathered at once when computing the weights of the k-reciprocal sets.
_PAIR_BATCH = 8192

__all__ = [
    "average_query_expansion",
    "k_reciprocal_rerank",
    "k_reciprocal_scores",
]


def average_query_expansion(
    query: ArrayLike,
    gallery: ArrayLike | None,
    n: int,
    distance: str = "cosine",
    exclude_self: bool = False,
) -> Tensor:
    """Replace every query by the mean of itself and its ``n`` nearest gallery items.

    With ``gallery=None`` the neighbours come from the query set itself (``exclude_self`` then
    skips the query's own entry). For ``distance="cosine"`` the embeddings are L2-normalised before
    averaging, and so is the result.
    """
    distance = check_distance(distance)
    q = as_embeddings(query, "query")
    g = q if gallery is None else as_embeddings(gallery, "gallery", q.device)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    n = min(n, g.shape[0] - (1 if exclude_self else 0))
    if n < 1:
        return q.clone()
    _, idx = knn(q, None if gallery is None else g, n, distance=distance, exclude_self=exclude_self)
    if distance == "cosine":
        q = F.normalize(q, dim=1)
        g = F.normalize(g, dim=1)
    expanded = (q + g[idx].sum(1)) / (n + 1)
    return F.normalize(expanded, dim=1) if distance == "cosine" else expanded


def _sq_dist_block(x: Tensor, y: Tensor, y_sq: Tensor) -> Tensor:
    """Squared Euclidean distances ``|x|^2 + |y|^2 - 2 x.y`` as a float32 block."""
    x_sq = (x * x).sum(1, keepdim=True)
    return torch.addmm(y_sq[None, :], x, y.t(), beta=1.0, alpha=-2.0).add_(x_sq)


def _neighbours_and_max(x: Tensor, x_sq: Tensor, k: int, chunk: int) -> tuple[Tensor, Tensor]:
    """``k`` nearest items of every row of ``x`` (itself included; ties by index) and row maxima."""
    n = x.shape[0]
    nn = torch.empty((n, k), dtype=torch.int64, device=x.device)
    row_max = torch.empty(n, dtype=torch.float32, device=x.device)
    cols = torch.arange(n, device=x.device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        d = _sq_dist_block(x[start:stop], x, x_sq)
        row_max[start:stop] = d.max(1).values
        # (distance, index) packed in one int64: order key shifted to a signed 32-bit range.
        key = ((float_order_key(d) - (1 << 31)) << 32) | cols[None, :]
        del d
        top = torch.topk(key, k, dim=1, largest=False, sorted=True).values
        nn[start:stop] = top & 0xFFFFFFFF
    return nn, row_max


def _reciprocal(nn: Tensor, k: int) -> Tensor:
    """Boolean mask over ``nn[:, :k+1]``: which forward neighbours are k-reciprocal."""
    fwd = nn[:, : k + 1]
    back = nn[fwd, : k + 1]  # (N, k+1, k+1)
    me = torch.arange(nn.shape[0], device=nn.device)[:, None, None]
    return (back == me).any(-1)


def _expansion_sets(nn: Tensor, k1: int, chunk: int) -> tuple[Tensor, Tensor]:
    """Entries ``(i, j)`` of the expanded k-reciprocal sets ``R*(i)``, sorted, without repeats."""
    n = nn.shape[0]
    half = int(round(k1 / 2))  # round half to even, like numpy.around
    big_mask = _reciprocal(nn, k1)
    big = torch.where(big_mask, nn[:, : k1 + 1], -1)  # R(i, k1), padded with -1
    small_mask = _reciprocal(nn, half)
    small = torch.where(small_mask, nn[:, : half + 1], -1)  # R(c, k1/2), padded with -1
    small_size = small_mask.sum(1)
    rows_out: list[Tensor] = []
    cols_out: list[Tensor] = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        b = big[start:stop]  # (c, k1+1)
        cand = b.clamp(min=0)
        cand_sets = small[cand]  # (c, k1+1, half+1)
        inter = (
            ((cand_sets[..., :, None] == b[:, None, None, :]) & (cand_sets[..., :, None] >= 0))
            .any(-1)
            .sum(-1)
        )  # |R(c, k1/2) & R(i, k1)|
        accept = (b >= 0) & (3 * inter > 2 * small_size[cand])
        extra = torch.where(accept[..., None], cand_sets, -1).flatten(1)
        members = torch.cat([b, extra], 1)
        members = torch.sort(members, 1).values
        keep = members >= 0
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        r, c = keep.nonzero(as_tuple=True)
        rows_out.append(r + start)
        cols_out.append(members[r, c])
    return torch.cat(rows_out), torch.cat(cols_out)


class _KReciprocal:
    """State of a k-reciprocal re-ranking; calling it returns re-ranked similarity blocks."""

    def __init__(
        self,
        query: Tensor,
        gallery: Tensor | None,
        distance: str,
        k1: int,
        k2: int,
        lambda_value: float,
        chunk_size: int | None,
    ) -> None:
        if distance == "cosine":
            query = F.normalize(query, dim=1)
            gallery = None if gallery is None else F.normalize(gallery, dim=1)
        x = query if gallery is None else torch.cat([query, gallery])
        n = x.shape[0]
        self.num_query = query.shape[0]
        self.gallery_offset = 0 if gallery is None else self.num_query
        self.lambda_value = float(lambda_value)
        self.x = x
        self.x_sq = (x * x).sum(1)
        k = max(k1 + 1, k2)
        if k > n:
            raise ValueError(f"k1: re-ranking needs more than {k - 1} items, got {n}")
        chunk = chunk_size or max(1, DEFAULT_BLOCK_ELEMENTS // (8 * n))
        self.chunk = chunk
        nn, self.row_max = _neighbours_and_max(x, self.x_sq, k, chunk)
        rows, cols = _expansion_sets(nn, k1, chunk)
        # V weights exp(-d(i, j) / m_i), each row normalised.
        dots = torch.cat(
            [
                (x[r] * x[c]).sum(1)
                for r, c in zip(rows.split(_PAIR_BATCH), cols.split(_PAIR_BATCH), strict=True)
            ]
        )
        d = (self.x_sq[rows] + self.x_sq[cols] - 2.0 * dots).double()
        w = torch.exp(-d / self.row_max[rows].double())
        row_sum = torch.zeros(n, dtype=torch.float64, device=x.device).index_add_(0, rows, w)
        w = w / row_sum[rows]
        import scipy.sparse as sp

        v = sp.csr_matrix((w.cpu().numpy(), (rows.cpu().numpy(), cols.cpu().numpy())), shape=(n, n))
        if k2 != 1:
            qe_rows = np.repeat(np.arange(n), k2)
            qe_cols = nn[:, :k2].cpu().numpy().ravel()
            avg = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (qe_rows, qe_cols)), shape=(n, n))
            v = avg @ v
        v.sort_indices()
        self.v = v.tocsr()
        g_rows = slice(self.gallery_offset, n)
        self.v_gallery_csc = self.v[g_rows].tocsc()
        self.v_gallery_csc.sort_indices()
        self.num_gallery = n - self.gallery_offset

    def overlap(self, start: int, stop: int) -> sp.csr_matrix:
        """``S[i, j] = sum_k min(V[i, k], V[j, k])`` for queries ``[start, stop)`` x gallery."""
        import scipy.sparse as sp

        vq = self.v[start:stop].tocoo()
        csc = self.v_gallery_csc
        counts = np.diff(csc.indptr)[vq.col]
        total = int(counts.sum())
        rep = np.repeat(np.arange(len(vq.col)), counts)
        offs = np.cumsum(counts) - counts
        pos = np.arange(total) - offs[rep] + csc.indptr[vq.col][rep]
        vals = np.minimum(vq.data[rep], csc.data[pos])
        return sp.csr_matrix(
            (vals, (vq.row[rep], csc.indices[pos])), shape=(stop - start, self.num_gallery)
        )

    def distances(self, start: int, stop: int) -> Tensor:
        """Re-ranked distances of queries ``[start, stop)`` to the whole gallery (float32)."""
        g = self.x[self.gallery_offset :]
        g_sq = self.x_sq[self.gallery_offset :]
        d = _sq_dist_block(self.x[start:stop], g, g_sq)
        d = d.double() / self.row_max[start:stop, None].double()
        s = self.overlap(start, stop).tocoo()
        jac = torch.ones_like(d)
        sv = torch.from_numpy(s.data).to(d.device)
        jac[torch.from_numpy(s.row).to(d.device), torch.from_numpy(s.col).to(d.device)] = (
            1.0 - sv / (2.0 - sv)
        )
        return ((1.0 - self.lambda_value) * jac + self.lambda_value * d).to(torch.float32)

    def __call__(self, start: int, stop: int) -> Tensor:
        return -self.distances(start, stop)


def _check_rerank_args(k1: int, k2: int, lambda_value: float) -> None:
    if not isinstance(k1, int) or k1 < 1:
        raise ValueError(f"k1: expected a positive integer, got {k1!r}")
    if not isinstance(k2, int) or k2 < 1:
        raise ValueError(f"k2: expected a positive integer, got {k2!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value: expected a value in [0, 1], got {lambda_value!r}")


def k_reciprocal_scores(
    query: ArrayLike,
    gallery: ArrayLike | None = None,
    distance: str = "cosine",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int | None = None,
) -> ScoreFn:
    """Memory-bounded k-reciprocal re-ranking as a similarity-block function for evaluation.

    ``fn(start, stop)`` returns minus the re-ranked distances of queries ``[start, stop)`` to the
    gallery (``gallery=None``: to the query set itself, for leave-one-out evaluation).
    """
    distance = check_distance(distance)
    _check_rerank_args(k1, k2, lambda_value)
    q = as_embeddings(query, "query")
    g = None if gallery is None else as_embeddings(gallery, "gallery", q.device)
    if g is not None and g.shape[1] != q.shape[1]:
        raise ValueError(
            f"gallery: has dimension {g.shape[1]} but query has dimension {q.shape[1]}"
        )
    return _KReciprocal(q, g, distance, k1, k2, lambda_value, chunk_size)


def k_reciprocal_rerank(
    query: ArrayLike,
    gallery: ArrayLike | None = None,
    distance: str = "cosine",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int | None = None,
) -> Tensor:
    """The full ``(Q, G)`` matrix of k-reciprocal re-ranked distances (smaller is closer).

    Convenient for small sets; :func:`evaluate` with ``rerank=True`` never materialises it.
    """
    fn = k_reciprocal_scores(query, gallery, distance, k1, k2, lambda_value, chunk_size)
    assert isinstance(fn, _KReciprocal)
    chunk = fn.chunk
    return torch.cat(
        [fn.distances(s, min(s + chunk, fn.num_query)) for s in range(0, fn.num_query, chunk)]
    )
