"""Exact ranks of every query's positives, computed one chunk of queries at a time.

Algorithm
---------
Every retrieval metric (:mod:`embedlab.metrics.metrics_from_ranks`) is a function of the ranks of the
positives only, so full rankings are never needed. :func:`embedlab.metrics.evaluate` drops junk
gallery items and skips junk-labelled queries first. Queries are then processed in chunks: the
chunk x gallery similarity block is computed with one matrix product, excluded items are set to ``-inf``, and the rank of each positive with similarity ``a``
at gallery index ``p`` is counted exactly as ``1 + #{v > a} + #{v = a, index < p}``:

* on CPU, only the items at least as similar as the hardest positive of their query (the
  "candidates", ``r_R`` of them per query) can precede a positive; they are extracted with one
  comparison pass and ordered by (row, similarity descending, index ascending) with one sort of
  packed 64-bit keys. Rows where candidates are a large share of the gallery are instead sorted
  whole and ranked by binary search. Each chunk is split over ``torch.get_num_threads()`` worker
  threads that each run a single-threaded BLAS product and rank their own rows;
* on accelerators every row of the block is sorted and ranked by binary search.

Peak memory is a small multiple of ``chunk_size * |gallery| * 4`` bytes. The similarity block is
computed once, which is also what a flat k-NN search (for instance faiss's) has to do to produce
its top-k lists; faiss itself serves the neighbour lists of :mod:`embedlab.metrics.knn` (re-ranking,
query expansion) and the k-means of ``nmi``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

try:  # a scikit-learn dependency; only used to keep BLAS single-threaded inside worker threads
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = [
    "CPU_STRATEGY",
    "DEFAULT_BLOCK_ELEMENTS",
    "PositiveRanks",
    "ScoreFn",
    "auto_chunk_size",
    "rank_positives",
]

#: A function returning the similarity block of queries ``[start, stop)`` against the whole
#: gallery, as a float32 tensor of shape ``(stop - start, |gallery|)``; larger is more similar.
ScoreFn = Callable[[int, int], Tensor]

#: Default size (in elements) of one chunk x gallery similarity block when ``chunk_size=None``
#: (2**26 float32 = 256 MiB).
DEFAULT_BLOCK_ELEMENTS = 1 << 26

#: How CPU chunks are ranked: "auto" (candidates for most rows, whole-row sorts for rows whose
#: candidates are many), "candidates", "sort" (every row sorted), "alternate" (every other row
#: sorted, and the fallback ordering of candidates) or "torch" (the accelerator code path). All
#: give identical results; the switch exists for tests and benchmarks.
CPU_STRATEGY = "auto"


def auto_chunk_size(num_gallery: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> int:
    """Number of queries per chunk so that one similarity block holds ``block_elements`` floats."""
    return max(1, block_elements // max(1, num_gallery))


@dataclass(frozen=True)
class PositiveRanks:
    """The ranks of every query's positives (the input of every retrieval metric).

    ``ranks``: float64 ``(Q, M)``, the 1-based ranks of each query's positives in increasing
    order, padded with ``inf``; ``num_positives``: int64 ``(Q,)``.
    """

    ranks: Tensor
    num_positives: Tensor

    def select(self, rows: Tensor) -> PositiveRanks:
        """The queries ``rows`` (an index or boolean tensor)."""
        return PositiveRanks(self.ranks[rows], self.num_positives[rows])

    def scatter(self, rows: Tensor, num_all: int) -> PositiveRanks:
        """These queries placed at ``rows`` among ``num_all``; the others have no positive."""
        ranks = torch.full((num_all, self.ranks.shape[1]), float("inf"), dtype=torch.float64)
        num_positives = torch.zeros(num_all, dtype=torch.int64)
        ranks[rows] = self.ranks
        num_positives[rows] = self.num_positives
        return PositiveRanks(ranks, num_positives)


def _equal_pairs(q_keys: Tensor, g_sorted: Tensor, g_order: Tensor) -> tuple[Tensor, Tensor]:
    """All (row, gallery index) pairs with ``q_keys[row] == gallery key``.

    ``g_sorted`` holds the gallery keys sorted ascending and ``g_order`` the permutation that sorts
    them; the pairs come out grouped by row.
    """
    lo = torch.searchsorted(g_sorted, q_keys, right=False)
    hi = torch.searchsorted(g_sorted, q_keys, right=True)
    counts = hi - lo
    total = int(counts.sum())
    device = q_keys.device
    rows = torch.repeat_interleave(torch.arange(len(q_keys), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(total, device=device) - starts[rows] + lo[rows]
    return rows, g_order[pos]


def float_order_key(v: Tensor) -> Tensor:
    """Map float32 values to int64 in [0, 2**32) with the same order (-0.0 treated as +0.0)."""
    bits = (v + 0.0).view(torch.int32).to(torch.int64)
    unsigned = bits & 0xFFFFFFFF
    return torch.where(bits < 0, (~unsigned) & 0xFFFFFFFF, unsigned | 0x80000000)


def padded_ranks(num_rows: int, rows: np.ndarray, ranks: np.ndarray) -> PositiveRanks:
    """The ``(num_rows, M)`` padded rank matrix from the ranks of all positives (``rows[i]`` owns
    ``ranks[i]``)."""
    order = np.lexsort((ranks, rows))
    rows, ranks = rows[order], ranks[order]
    num_pos = np.bincount(rows, minlength=num_rows).astype(np.int64)
    start = np.cumsum(num_pos) - num_pos
    slot = np.arange(len(rows)) - start[rows]
    out = np.full((num_rows, max(1, int(num_pos.max(initial=0)))), np.inf)
    out[rows, slot] = ranks
    return PositiveRanks(torch.from_numpy(out), torch.from_numpy(num_pos))


def _tie_counts(scores: Tensor, rows: Tensor, cols: Tensor, values: Tensor, batch: int) -> Tensor:
    """For each (row, col, value): number of items of the row with that value and a smaller index."""
    num_g = scores.shape[1]
    idx = torch.arange(num_g, device=scores.device)
    out = []
    for part in torch.arange(len(rows), device=scores.device).split(max(1, batch)):
        eq = scores[rows[part]] == values[part, None]
        out.append((eq & (idx[None, :] < cols[part, None])).sum(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64, device=scores.device)


def _ranks_by_sorting(
    scores: Tensor,
    rows: Tensor,
    local_rows: Tensor,
    cols: Tensor,
    values: Tensor,
    sorted_rows: Tensor,
) -> Tensor:
    """Ranks of positives ``(rows, cols)`` with similarities ``values`` in ``scores``.

    ``sorted_rows[local_rows[i]]`` is row ``rows[i]`` of ``scores`` sorted ascending. The rank is
    ``1 + #{v > a} + #{v = a, index < p}``: the first count is a binary search in the sorted row;
    the second is non-zero only when another item has exactly the same similarity.
    """
    num_g = sorted_rows.shape[1]
    h = sorted_rows.shape[0]
    num_pos = torch.bincount(local_rows, minlength=h)
    order = torch.argsort(local_rows, stable=True)
    start = torch.cumsum(num_pos, 0) - num_pos
    slot = torch.empty_like(local_rows)
    slot[order] = torch.arange(len(rows), device=rows.device) - start[local_rows[order]]
    width = max(1, int(num_pos.max())) if len(rows) else 1
    needles = torch.full((h, width), float("inf"), device=values.device, dtype=values.dtype)
    needles[local_rows, slot] = values
    left = torch.searchsorted(sorted_rows, needles)[local_rows, slot]
    right = torch.searchsorted(sorted_rows, needles, right=True)[local_rows, slot]
    rank = num_g - right + 1
    tied = (right - left > 1).nonzero().flatten()
    if len(tied):
        rank[tied] += _tie_counts(scores, rows[tied], cols[tied], values[tied], h)
    return rank


def _positive_ranks_cpu(
    scores: Tensor,
    rows: Tensor,
    cols: Tensor,
    q_labels: Tensor,
    g_labels: np.ndarray,
    mask_buffer: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ranks of the positives of one chunk (CPU), excluded items being ``-inf``.

    Only items at least as similar as the hardest positive of their query can precede a positive
    ("candidates"). Rows with few candidates are ranked by ordering just their candidates by
    (similarity descending, index ascending); rows where candidates are a large share of the
    gallery are sorted whole (numpy's vectorised sort) and ranked by binary search.
    """
    s = scores.numpy()
    c, num_g = s.shape
    r_np, c_np = rows.numpy(), cols.numpy()
    a = s[r_np, c_np]
    threshold = np.full(c, np.inf, dtype=np.float32)
    np.minimum.at(threshold, r_np, a)
    has_pos = np.isfinite(threshold)
    ql = q_labels.numpy()

    if mask_buffer is not None and mask_buffer.size >= s.size:
        mask = mask_buffer.reshape(-1)[: s.size].reshape(s.shape)
        np.greater_equal(s, threshold[:, None], out=mask)
    else:
        mask = s >= threshold[:, None]
    flat = mask.reshape(-1)
    n8 = flat.size // 8 * 8
    # Candidates are usually sparse: find the non-zero 8-byte words first, then their bytes.
    words = np.flatnonzero(flat[:n8].view(np.uint64))
    first_row = words * 8 // num_g
    last_row = (words * 8 + 7) // num_g
    # Rows where a large share of the words hold candidates are sorted whole instead.
    if CPU_STRATEGY == "candidates":
        heavy = np.zeros(c, dtype=bool)
    elif CPU_STRATEGY == "sort":
        heavy = has_pos
    elif CPU_STRATEGY == "alternate":  # tests: mixes both strategies, row by row
        heavy = has_pos & (np.arange(c) % 2 == 0)
    else:
        heavy = (np.bincount(first_row, minlength=c) > max(64, num_g // 32)) & has_pos
    if heavy.any():
        words = words[~(heavy[first_row] & heavy[np.minimum(last_row, c - 1)])]
    inner = np.flatnonzero(flat[:n8].view(np.uint64)[words].view(np.uint8))
    idx = words[inner >> 3] * 8 + (inner & 7)
    tail = np.flatnonzero(flat[n8:])
    if len(tail):
        idx = np.concatenate([idx, tail + n8])
    del mask, flat
    r = idx // num_g
    if heavy.any():
        keep = ~heavy[r]
        idx, r = idx[keep], r[keep]
    col = idx - r * num_g
    # Order the candidates by (row, similarity descending, index ascending), packed in an int64:
    # row | similarity order key (32 bits, complemented) | gallery index. When the three fit in 63
    # bits the keys are distinct and one plain sort of them does it; otherwise a stable sort of
    # (row, similarity) keeps the (row, index) order in which the candidates were found.
    bits = (s.reshape(-1)[idx] + np.float32(0.0)).view(np.int32).astype(np.int64)
    unsigned = bits & 0xFFFFFFFF
    desc = 0xFFFFFFFF - np.where(bits < 0, ~unsigned & 0xFFFFFFFF, unsigned | 0x80000000)
    col_bits = max(1, (num_g - 1).bit_length())
    fits = max(1, (c - 1).bit_length()) + 32 + col_bits <= 63
    if fits and CPU_STRATEGY != "alternate":
        key = np.sort((((r << 32) | desc) << col_bits) | col)
        r, col = key >> (32 + col_bits), key & ((1 << col_bits) - 1)
    else:
        order = np.argsort((r << 32) | desc, kind="stable")
        r, col = r[order], col[order]
    first = np.searchsorted(r, np.arange(c))
    hit = np.flatnonzero(g_labels[col] == ql[r])
    out_rows = [r[hit]]
    out_ranks = [hit - first[r[hit]] + 1]
    if heavy.any():
        heavy_rows = np.flatnonzero(heavy)
        sel = heavy[r_np]
        sub = s[heavy_rows]
        sub.sort(axis=1)
        sel_t = torch.from_numpy(sel)
        rank = _ranks_by_sorting(
            scores,
            rows[sel_t],
            torch.from_numpy(np.searchsorted(heavy_rows, r_np[sel])),
            cols[sel_t],
            torch.from_numpy(a[sel]),
            torch.from_numpy(sub),
        )
        del sub
        out_rows.append(r_np[sel])
        out_ranks.append(rank.numpy())
    return np.concatenate(out_rows), np.concatenate(out_ranks)


def _positive_ranks_torch(
    scores: Tensor, rows: Tensor, cols: Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ranks of the positives of one chunk on an accelerator: sort every row."""
    sorted_rows = torch.sort(scores, dim=1).values
    rank = _ranks_by_sorting(scores, rows, rows, cols, scores[rows, cols], sorted_rows)
    return rows.cpu().numpy(), rank.cpu().numpy()


class _ChunkRanker:
    """Exclusions and exact positive ranks for one chunk of queries (see :func:`rank_positives`)."""

    def __init__(
        self,
        score_fn: ScoreFn,
        q_labels: Tensor,
        g_labels: Tensor,
        q_cams: Tensor | None,
        g_cams: Tensor | None,
        q_ids: Tensor | None,
        g_ids: Tensor | None,
        use_torch: bool,
    ) -> None:
        self.score_fn = score_fn
        self.q_labels, self.g_labels = q_labels, g_labels
        self.q_cams, self.g_cams = q_cams, g_cams
        self.q_ids, self.g_ids = q_ids, g_ids
        self.use_torch = use_torch
        self.g_sorted, self.g_order = torch.sort(g_labels, stable=True)
        self.gid_sorted: Tensor | None = None
        self.gid_order: Tensor | None = None
        if g_ids is not None:
            self.gid_sorted, self.gid_order = torch.sort(g_ids, stable=True)
        self.g_labels_np = g_labels.cpu().numpy()
        self.local = threading.local()

    def __call__(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.score_fn(start, stop)
        if scores.dtype != torch.float32:
            scores = scores.to(torch.float32)
        ql = self.q_labels[start:stop]
        rows, cols = _equal_pairs(ql, self.g_sorted, self.g_order)
        ex_rows: list[Tensor] = []
        ex_cols: list[Tensor] = []
        if self.q_cams is not None and self.g_cams is not None:
            same_cam = self.g_cams[cols] == self.q_cams[start:stop][rows]
            ex_rows.append(rows[same_cam])
            ex_cols.append(cols[same_cam])
            rows, cols = rows[~same_cam], cols[~same_cam]
        if self.q_ids is not None and self.g_ids is not None:
            assert self.gid_sorted is not None and self.gid_order is not None
            qi = self.q_ids[start:stop]
            loc = torch.searchsorted(self.gid_sorted, qi).clamp(max=len(self.gid_sorted) - 1)
            hit = self.gid_sorted[loc] == qi
            ex_rows.append(torch.arange(stop - start, device=qi.device)[hit])
            ex_cols.append(self.gid_order[loc[hit]])
            not_self = self.g_ids[cols] != qi[rows]
            rows, cols = rows[not_self], cols[not_self]
        # Excluded items get -inf: they can then never precede a (finite) positive.
        if scores.device.type == "cpu":
            s = scores.numpy()
            for er, ec in zip(ex_rows, ex_cols, strict=True):
                s[er.numpy(), ec.numpy()] = -np.inf
        else:
            for er, ec in zip(ex_rows, ex_cols, strict=True):
                scores[er, ec] = float("-inf")
        if self.use_torch:
            r, rk = _positive_ranks_torch(scores, rows, cols)
        else:
            mask = getattr(self.local, "mask", None)
            if mask is None or mask.size < scores.numel():
                mask = self.local.mask = _empty((scores.shape[0], scores.shape[1]), torch.bool)
            r, rk = _positive_ranks_cpu(scores, rows, cols, ql, self.g_labels_np, mask)
        return r.astype(np.int64) + start, rk.astype(np.int64)


def rank_positives(
    score_fn: ScoreFn,
    num_queries: int,
    q_labels: Tensor,
    g_labels: Tensor,
    q_cams: Tensor | None = None,
    g_cams: Tensor | None = None,
    q_ids: Tensor | None = None,
    g_ids: Tensor | None = None,
    chunk_size: int | None = None,
) -> PositiveRanks:
    """Rank the positives of every query exactly, one chunk of queries at a time.

    ``score_fn(start, stop)`` returns the similarity block of queries ``[start, stop)`` against the
    gallery. Junk items must have been dropped by the caller. Gallery items are excluded as
    described in the module docstring; ``q_ids``/``g_ids``
    (unique within the gallery) exclude gallery items with the id of the query.

    On CPU, when ``score_fn`` is thread-safe (attribute ``thread_safe``), each chunk is split over
    ``torch.get_num_threads()`` worker threads that compute their own sub-block with a
    single-threaded BLAS call and rank it: no core idles while another post-processes, and no BLAS
    thread pool spins in the way of the ranking. Peak memory stays about ``chunk_size x |gallery|``.
    """
    num_gallery = len(g_labels)
    chunk = auto_chunk_size(num_gallery) if chunk_size is None else int(chunk_size)
    on_cpu = g_labels.device.type == "cpu"
    ranker = _ChunkRanker(
        score_fn, q_labels, g_labels, q_cams, g_cams, q_ids, g_ids,
        use_torch=not on_cpu or CPU_STRATEGY == "torch",
    )  # fmt: skip
    workers = max(1, torch.get_num_threads()) if on_cpu else 1
    if not getattr(score_fn, "thread_safe", False) or num_queries < 2 * workers:
        workers = 1
    # Equal-sized tasks, ``workers`` per chunk of at most ``chunk`` queries.
    num_chunks = -(-num_queries // chunk)
    step = max(1, -(-num_queries // (num_chunks * workers)))
    tasks = [(s, min(s + step, num_queries)) for s in range(0, num_queries, step)]
    if workers == 1:
        results = [ranker(a, b) for a, b in tasks]
    else:
        limit = (
            threadpool_limits(limits=1, user_api="blas")
            if threadpool_limits is not None
            else contextlib.nullcontext()
        )
        with limit, ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda t: ranker(*t), tasks))
    if not results:
        return padded_ranks(num_queries, np.zeros(0, np.int64), np.zeros(0, np.int64))
    return padded_ranks(
        num_queries,
        np.concatenate([r for r, _ in results]),
        np.concatenate([k for _, k in results]),
    )


def _empty(shape: tuple[int, int], dtype: torch.dtype) -> np.ndarray:
    """A large uninitialised CPU array, allocated by torch.

    numpy asks the kernel for transparent huge pages on large allocations, and faulting those in
    can cost several times more than ordinary pages on a busy machine; blocks are rewritten for
    every chunk anyway, so ordinary pages are the better deal here.
    """
    return torch.empty(shape, dtype=dtype).numpy()
