"""Exact, memory-bounded retrieval evaluation (metric learning and person re-identification).

Protocol
--------
Every query ranks the gallery by similarity (cosine similarity, or negative Euclidean distance),
most similar first. Equal similarities are ordered by gallery index (smaller index first), so every
rank below is well defined and reproducible.

For a query ``q`` the gallery is first filtered:

* gallery items whose label equals ``junk_label`` (``-1`` by default) are ignored;
* with cameras (ReID protocol: Market-1501, DukeMTMC-reID, MSMT17), gallery items with the same
  label **and** the same camera as ``q`` are ignored; label ``0`` (distractors) is an ordinary
  negative;
* in leave-one-out mode (``gallery=None``: CUB, Cars, SOP) the query itself is ignored (by index,
  not by value); more generally, gallery items whose id equals the query's id are ignored.

The positives of ``q`` are the remaining gallery items with the label of ``q``; let ``R`` be their
number and ``r_1 < r_2 < ... < r_R`` their 1-based ranks among the remaining items. A query with
``R = 0`` is skipped and counted in ``num_skipped_queries``. Per query:

* ``cmc[k-1] = recall@k = [r_1 <= k]`` (hit rate at rank ``k``; ``precision@1 = [r_1 = 1]``);
* ``AP = (1/R) * sum_j j / r_j`` (average precision over the whole ranking);
* ``R-precision = |{j : r_j <= R}| / R`` and ``MAP@R = (1/R) * sum_{j : r_j <= R} j / r_j``
  (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020);
* ``INP = R / r_R`` (inverse negative penalty, Ye et al., "Deep Learning for Person
  Re-identification: A Survey and Outlook", TPAMI 2021: ``NP = (r_R - R) / r_R``, ``INP = 1 - NP``).

Conventions (``convention``, an :class:`EvalOptions` field)
--------------------------------------------------------------
Everything above is the ``torchreid`` convention (the default): it equals torchreid's
``eval_market1501``. ``official`` computes ``map`` as the MATLAB evaluation code released with
Market-1501 and MARS (``compute_AP.m``; also used for DukeMTMC-reID and CUHK03) does: a
trapezoidal AP, ``AP = (1/R) * sum_j (j / r_j + p'_j) / 2`` with ``p'_j = (j - 1) / (r_j - 1)``
(``1`` when ``r_j = 1``), over the same ranking (junk -1 and the query's identity in its own
camera removed, distractors 0 negatives). CMC and the other metrics do not change. The MATLAB code
gives a query without any positive an undefined AP; here it is skipped under both conventions.
For MARS the official code also ranks every test tracklet, the queries included (the query
itself is ignored as the same identity in the same camera): :func:`evaluate` ranks the gallery
it is given, and the training pipeline builds that gallery for ``Mars`` under ``official``.

Each is a metric object of :mod:`embedlab.metrics.metrics_from_ranks` (any object with a ``name`` and
``__call__(ranks, num_positives)`` can be added); each reported metric is the mean over the valid
(non-skipped) queries.

The algorithm (exact ranks of the positives from chunked similarity blocks) is described in
:mod:`embedlab.metrics.positive_ranks`.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from embedlab.metrics._inputs import (
    ArrayLike,
    Distance,
    as_embeddings,
    as_ids,
    check_distance,
    check_ks,
)
from embedlab.metrics.metrics_from_ranks import (
    CONVENTIONS,
    Convention,
    default_metrics,
    for_convention,
)
from embedlab.metrics.positive_ranks import (
    PositiveRanks,
    ScoreFn,
    _empty,
    padded_ranks,
    rank_positives,
)

__all__ = ["EvalOptions", "MetricFn", "evaluate", "excluded", "similarity_fn"]


class MetricFn(Protocol):
    """A retrieval metric: see :mod:`embedlab.metrics.metrics_from_ranks`."""

    name: str

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate` ranks the gallery (everything but the data and the metrics).

    Args:
        distance: ``"cosine"`` or ``"euclidean"``.
        chunk_size: queries per chunk; ``None`` picks it so a similarity block has about 2**26
            elements (256 MiB). Results do not depend on it.
        junk_label: gallery label ignored everywhere (``None`` disables it).
        rerank: apply k-reciprocal re-ranking (Zhong et al., CVPR 2017) with ``rerank_k1``,
            ``rerank_k2`` and ``rerank_lambda`` before ranking.
        query_expansion: if > 0, replace every query by the mean of itself and its
            ``query_expansion`` nearest gallery items (average query expansion) first.
        compute_nmi: also report ``nmi``, the normalised mutual information between the query
            labels and a faiss k-means clustering of the queries (as many clusters as labels).
        device: where to compute; ``None``: the device of the query embeddings.
        convention: ``torchreid`` (default) or ``official``: how ``map`` is computed (see the
            module docstring); a :class:`MeanAveragePrecision` among the metrics becomes an
            :class:`~embedlab.metrics.metrics_from_ranks.OfficialAveragePrecision` under ``official``.
    """

    distance: Distance = "cosine"
    chunk_size: int | None = None
    junk_label: int | None = -1
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    query_expansion: int = 0
    compute_nmi: bool = False
    device: str | torch.device | None = None
    convention: Convention = "torchreid"

    def __post_init__(self) -> None:
        check_distance(self.distance)
        if self.convention not in CONVENTIONS:
            raise ValueError(
                f"convention: expected one of {list(CONVENTIONS)}, got {self.convention!r}"
            )
        chunk = self.chunk_size
        if chunk is not None and (
            not isinstance(chunk, int | np.integer) or isinstance(chunk, bool) or chunk < 1
        ):
            raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk!r}")
        qe = self.query_expansion
        if isinstance(qe, bool) or not isinstance(qe, int) or qe < 0:
            raise ValueError(f"query_expansion: expected a non-negative integer, got {qe!r}")


def excluded(
    query_label: int,
    query_camera: int,
    labels: np.ndarray,
    cameras: np.ndarray | None,
    junk_label: int | None = -1,
) -> np.ndarray:
    """The protocol's exclusion rule for one query: which gallery items it ignores.

    Junk-labelled items and, with cameras (ReID), items with the query's label **and** camera.
    (:func:`evaluate` applies the same rule to all queries at once; the query itself, by id, is
    excluded too.)
    """
    out = np.zeros(len(labels), dtype=bool) if junk_label is None else labels == junk_label
    if cameras is not None:
        out |= (labels == query_label) & (cameras == query_camera)
    return out


def check_metrics(metrics: Sequence[MetricFn]) -> None:
    seen: set[str] = set()
    for m in metrics:
        name = getattr(m, "name", None)
        if not isinstance(name, str) or not name or not callable(m):
            raise ValueError(
                f"metrics: {m!r} needs a `name` (str) and a __call__(ranks, num_positives)"
            )
        if name in seen:
            raise ValueError(f"metrics: two metrics are named {name!r}")
        seen.add(name)


def _summarise(positives: PositiveRanks, metrics: Sequence[MetricFn]) -> dict[str, Any]:
    """The mean of every metric over the valid queries (those with a positive)."""
    valid = positives.num_positives > 0
    n_valid = int(valid.sum())
    scored = positives.select(valid)
    if n_valid == 0:
        warnings.warn(
            "evaluate: no query has a valid positive in the gallery; all metrics are 0",
            RuntimeWarning,
            stacklevel=3,
        )
    out: dict[str, Any] = {}
    for metric in metrics:
        values = torch.as_tensor(metric(scored.ranks, scored.num_positives))
        if values.ndim == 0 or values.shape[0] != n_valid:
            raise ValueError(
                f"metric {metric.name!r}: returned shape {tuple(values.shape)}, expected one "
                f"value (or row) per query, ({n_valid}, ...)"
            )
        values = values.detach().to(torch.float64).cpu()
        mean = values.mean(0) if n_valid else torch.zeros(values.shape[1:], dtype=torch.float64)
        out[metric.name] = float(mean) if mean.ndim == 0 else mean.numpy()
    out["num_valid_queries"] = n_valid
    out["num_skipped_queries"] = int(len(valid) - n_valid)
    return out


def _unit_rows(x: Tensor) -> Tensor:
    """L2-normalised rows; ``x`` itself when its rows already have unit norm (to 1e-6)."""
    norms = torch.linalg.vector_norm(x, dim=1)
    if bool(((norms - 1.0).abs() <= 1e-6).all()):
        return x
    return x / norms.clamp(min=1e-12)[:, None]


class _SimilarityBlocks:
    """Similarity blocks (larger is closer) for already prepared float32 embeddings.

    Cosine: dot products of L2-normalised embeddings. Euclidean: ``2 q.g - |g|^2``, which orders
    the gallery exactly as the squared Euclidean distance ``|q|^2 + |g|^2 - 2 q.g`` does (the
    query's own norm is a per-row constant) without the cancellation of adding ``|q|^2``; the
    factor 2 is applied to the query beforehand (exact in floating point).

    On CPU the product runs through numpy's BLAS into a buffer reused by the calling thread (no
    per-chunk allocation), so a returned block is only valid until that thread's next call.
    """

    thread_safe = True

    def __init__(self, query: Tensor, gallery: Tensor, distance: Distance) -> None:
        if distance == "cosine":
            self.q = _unit_rows(query)
            self.g = self.q if gallery is query else _unit_rows(gallery)
            self.g_sq: Tensor | None = None
        else:
            self.q = query * 2.0
            self.g = gallery
            self.g_sq = (gallery * gallery).sum(1)
        self.on_cpu = self.q.device.type == "cpu"
        if self.on_cpu:
            self.q_np = self.q.numpy()
            self.g_np = self.g.numpy()
        self.local = threading.local()

    def __call__(self, start: int, stop: int) -> Tensor:
        if not self.on_cpu:
            block = self.q[start:stop] @ self.g.t()
            return block if self.g_sq is None else block.sub_(self.g_sq)
        rows = stop - start
        buffer = getattr(self.local, "buffer", None)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self.local.buffer = _empty((rows, self.g_np.shape[0]), torch.float32)
        out = buffer[:rows]
        np.matmul(self.q_np[start:stop], self.g_np.T, out=out)
        block = torch.from_numpy(out)
        return block if self.g_sq is None else block.sub_(self.g_sq)


def similarity_fn(query: Tensor, gallery: Tensor, distance: Distance) -> ScoreFn:
    """Similarity-block function for ``query`` against ``gallery`` (see :class:`_SimilarityBlocks`)."""
    return _SimilarityBlocks(query, gallery, distance)


def evaluate(
    query: ArrayLike,
    query_labels: ArrayLike,
    gallery: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    query_cams: ArrayLike | None = None,
    gallery_cams: ArrayLike | None = None,
    *,
    metrics: Sequence[MetricFn] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    max_rank: int = 50,
    query_ids: ArrayLike | None = None,
    gallery_ids: ArrayLike | None = None,
    options: EvalOptions | None = None,
    return_per_query: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate retrieval of ``query`` against ``gallery`` (or leave-one-out within ``query``).

    Args:
        query: ``(Q, D)`` query embeddings (tensor or numpy array).
        query_labels: ``(Q,)`` integer labels of the queries.
        gallery: ``(G, D)`` gallery embeddings, or ``None`` for leave-one-out retrieval within the
            query set (each query is excluded from its own gallery by index).
        gallery_labels: ``(G,)`` gallery labels (required with ``gallery``).
        query_cams, gallery_cams: camera ids; when given, the ReID protocol applies (gallery items
            with the query's label and camera are ignored). In leave-one-out mode only
            ``query_cams`` is given.
        metrics: the metric objects to report (:mod:`embedlab.metrics.metrics_from_ranks`); ``None``:
            the built-ins, ``recall@k`` for each of ``ks`` and a ``cmc`` curve of ``max_rank``.
        query_ids, gallery_ids: optional sample ids; a gallery item with the id of the query is
            ignored (for query and gallery sets that share samples). Gallery ids must be unique.
        options: an :class:`EvalOptions` (distance, chunking, re-ranking, ...);
            ``overrides`` replace some of its fields, e.g. ``distance="euclidean"`` or
            ``convention="official"`` (the MATLAB code's AP, see the module docstring).
        return_per_query: also return ``per_query``: ``num_positives``, the padded ``ranks`` and
            each metric's per-query values (NaN for skipped queries), as numpy arrays.

    Returns:
        A dict with one entry per metric (a float, or a numpy array for a curve such as
        ``cmc``), ``num_valid_queries`` and ``num_skipped_queries`` (ints), and ``nmi`` if
        requested.

    Raises:
        ValueError: naming the argument at fault for mismatched lengths or dimensions, empty
            inputs, non-finite embeddings or invalid options.
    """
    opts = dataclasses.replace(options or EvalOptions(), **overrides)
    if metrics is None:
        metrics = default_metrics(check_ks(ks, max_rank), int(max_rank))
    check_metrics(metrics)
    metrics = for_convention(metrics, opts.convention)
    distance, junk_label = opts.distance, opts.junk_label
    dev = torch.device(opts.device) if opts.device is not None else None
    if dev is None and isinstance(query, Tensor):
        dev = query.device
    q = as_embeddings(query, "query", dev)
    dev = q.device
    num_q = q.shape[0]
    ql = as_ids(query_labels, "query_labels", num_q, dev)
    qc = as_ids(query_cams, "query_cams", num_q, dev) if query_cams is not None else None
    qid = as_ids(query_ids, "query_ids", num_q, dev) if query_ids is not None else None
    leave_one_out = gallery is None
    gc: Tensor | None
    gid: Tensor | None
    if leave_one_out:
        if gallery_labels is not None:
            raise ValueError("gallery_labels: given without gallery")
        if gallery_cams is not None:
            raise ValueError("gallery_cams: given without gallery (leave-one-out uses query_cams)")
        if gallery_ids is not None:
            raise ValueError("gallery_ids: given without gallery")
        g, gl, gc = q, ql, qc
        qid = gid = torch.arange(num_q, device=dev)
    else:
        assert gallery is not None
        g = as_embeddings(gallery, "gallery", dev)
        if g.shape[1] != q.shape[1]:
            raise ValueError(
                f"gallery: has dimension {g.shape[1]} but query has dimension {q.shape[1]}"
            )
        if gallery_labels is None:
            raise ValueError("gallery_labels: required when gallery is given")
        gl = as_ids(gallery_labels, "gallery_labels", g.shape[0], dev)
        if (query_cams is None) != (gallery_cams is None):
            missing = "gallery_cams" if gallery_cams is None else "query_cams"
            raise ValueError(f"{missing}: cameras must be given for both query and gallery")
        gc = (
            as_ids(gallery_cams, "gallery_cams", g.shape[0], dev)
            if gallery_cams is not None
            else None
        )
        if (query_ids is None) != (gallery_ids is None):
            missing = "gallery_ids" if gallery_ids is None else "query_ids"
            raise ValueError(f"{missing}: ids must be given for both query and gallery")
        gid = (
            as_ids(gallery_ids, "gallery_ids", g.shape[0], dev) if gallery_ids is not None else None
        )
        if gid is not None and len(torch.unique(gid)) != len(gid):
            raise ValueError("gallery_ids: must be unique")

    # Junk gallery items are ignored by every query: drop them before any computation (also
    # before re-ranking / query expansion). Junk-labelled queries have no valid positive: they are
    # skipped, i.e. kept out of the computation and counted.
    num_q_all = num_q
    q_kept: Tensor | None = None
    if junk_label is not None:
        q_junk = ql == junk_label
        if bool(q_junk.any()):
            q_kept = (~q_junk).nonzero().flatten()
            q, ql = q[q_kept], ql[q_kept]
            qc = qc[q_kept] if qc is not None else None
            num_q = len(ql)
        if leave_one_out:
            g, gl, gc = q, ql, qc
            qid = gid = torch.arange(num_q, device=dev)
        else:
            g_keep = gl != junk_label
            if not bool(g_keep.all()):
                g, gl = g[g_keep], gl[g_keep]
                gc = gc[g_keep] if gc is not None else None
                gid = gid[g_keep] if gid is not None else None
            if qid is not None and q_kept is not None:
                qid = qid[q_kept]
    if num_q == 0 or len(gl) == 0:
        positives = padded_ranks(num_q, np.zeros(0, np.int64), np.zeros(0, np.int64))
    else:
        positives = rank_positives(
            _score_fn(q, g, leave_one_out, opts), len(ql), ql, gl, qc, gc, qid, gid,
            chunk_size=opts.chunk_size,
        )  # fmt: skip
    if q_kept is not None:
        positives = positives.scatter(q_kept.cpu(), num_q_all)
    out = _summarise(positives, metrics)
    if opts.compute_nmi:
        from embedlab.metrics.clustering import nmi_kmeans

        out["nmi"] = nmi_kmeans(q, ql, distance=distance) if num_q > 1 else 0.0
    if return_per_query:
        out["per_query"] = _per_query(positives, metrics)
    return out


def _per_query(positives: PositiveRanks, metrics: Sequence[MetricFn]) -> dict[str, np.ndarray]:
    """``num_positives``, ``ranks`` and every metric's per-query values (NaN where skipped)."""
    valid = positives.num_positives > 0
    scored = positives.select(valid)
    out = {"num_positives": positives.num_positives.numpy(), "ranks": positives.ranks.numpy()}
    for metric in metrics:
        values = torch.as_tensor(metric(scored.ranks, scored.num_positives)).to(torch.float64)
        full = torch.full((len(valid), *values.shape[1:]), float("nan"), dtype=torch.float64)
        full[valid] = values.cpu()
        out[metric.name] = full.numpy()
    return out


def _score_fn(q: Tensor, g: Tensor, leave_one_out: bool, opts: EvalOptions) -> ScoreFn:
    """Similarity blocks after optional query expansion, or k-reciprocal re-ranked ones."""
    if opts.query_expansion > 0:
        from embedlab.metrics.rerank import average_query_expansion

        q = average_query_expansion(
            q, None if leave_one_out else g, opts.query_expansion, distance=opts.distance,
            exclude_self=leave_one_out,
        )  # fmt: skip
    if opts.rerank:
        from embedlab.metrics.rerank import k_reciprocal_scores

        return k_reciprocal_scores(
            q,
            None if leave_one_out else g,
            distance=opts.distance,
            k1=opts.rerank_k1,
            k2=opts.rerank_k2,
            lambda_value=opts.rerank_lambda,
        )
    return similarity_fn(q, g, opts.distance)
