"""Reference retrieval metrics written directly from the protocol definitions.

Deliberately naive: float64 distances, a full stable sort of the gallery per query (ties by
gallery index), explicit Python loops over the ranking. Used only by the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def reference_distances(query: Any, gallery: Any, metric: str) -> np.ndarray:
    """Full (Q, G) float64 distance matrix (cosine: 1 - cos; euclidean: squared distance)."""
    q = _np(query).astype(np.float64)
    g = _np(gallery).astype(np.float64)
    out = np.empty((len(q), len(g)))
    if metric == "cosine":
        qn = q / np.maximum(np.sqrt((q * q).sum(1, keepdims=True)), 1e-12)
        gn = g / np.maximum(np.sqrt((g * g).sum(1, keepdims=True)), 1e-12)
        for i in range(len(q)):
            out[i] = 1.0 - (gn * qn[i]).sum(1)
    else:
        for i in range(len(q)):
            out[i] = ((g - q[i]) ** 2).sum(1)
    return out


def reference_evaluate(
    query: Any,
    query_labels: Any,
    gallery: Any | None = None,
    gallery_labels: Any | None = None,
    query_cams: Any | None = None,
    gallery_cams: Any | None = None,
    metric: str = "cosine",
    ks: Sequence[int] = (1, 5, 10),
    max_rank: int = 50,
    junk_label: int | None = -1,
    query_ids: Any | None = None,
    gallery_ids: Any | None = None,
    distances: np.ndarray | None = None,
) -> dict[str, Any]:
    """Retrieval metrics by brute force; ``distances`` (Q, G) overrides the embedding distances."""
    ql = _np(query_labels)
    loo = gallery_labels is None
    if loo:
        gl = ql
        qc = None if query_cams is None else _np(query_cams)
        gc = qc
        qid = gid = np.arange(len(ql))
    else:
        gl = _np(gallery_labels)
        qc = None if query_cams is None else _np(query_cams)
        gc = None if gallery_cams is None else _np(gallery_cams)
        qid = None if query_ids is None else _np(query_ids)
        gid = None if gallery_ids is None else _np(gallery_ids)
    if distances is None:
        distances = reference_distances(query, query if gallery is None else gallery, metric)
    num_g = distances.shape[1]

    cmc_sum = np.zeros(max_rank)
    hits = {k: 0 for k in ks}
    aps: list[float] = []
    mapr: list[float] = []
    rprec: list[float] = []
    inps: list[float] = []
    p1: list[float] = []
    skipped = 0
    for i in range(len(ql)):
        order = sorted(range(num_g), key=lambda j, i=i: (distances[i, j], j))
        matches: list[bool] = []
        for j in order:
            if junk_label is not None and gl[j] == junk_label:
                continue
            if qid is not None and gid is not None and gid[j] == qid[i]:
                continue
            if qc is not None and gc is not None and gl[j] == ql[i] and gc[j] == qc[i]:
                continue
            matches.append(bool(gl[j] == ql[i]))
        big_r = sum(matches)
        if big_r == 0:
            skipped += 1
            continue
        # CMC / recall@k: is there a positive within the first k?
        first = matches.index(True) + 1
        for k in range(1, max_rank + 1):
            cmc_sum[k - 1] += 1.0 if first <= k else 0.0
        for k in ks:
            hits[k] += 1 if first <= k else 0
        p1.append(1.0 if matches[0] else 0.0)
        # AP: mean of precision@rank over the positions of the positives.
        found = 0
        precisions = []
        for pos, m in enumerate(matches, start=1):
            if m:
                found += 1
                precisions.append(found / pos)
        aps.append(sum(precisions) / big_r)
        # R-precision and MAP@R over the first R positions.
        found = 0
        total = 0.0
        for pos in range(1, big_r + 1):
            if matches[pos - 1]:
                found += 1
                total += found / pos
        rprec.append(found / big_r)
        mapr.append(total / big_r)
        # INP: R / rank of the last positive.
        last = max(pos for pos, m in enumerate(matches, start=1) if m)
        inps.append(big_r / last)
    n = len(aps)
    out: dict[str, Any] = {}
    if n == 0:
        for k in ks:
            out[f"recall@{k}"] = 0.0
        out["cmc"] = np.zeros(max_rank)
        for key in ("map", "map@r", "r_precision", "precision@1", "minp"):
            out[key] = 0.0
    else:
        for k in ks:
            out[f"recall@{k}"] = hits[k] / n
        out["cmc"] = cmc_sum / n
        out["map"] = float(np.mean(aps))
        out["map@r"] = float(np.mean(mapr))
        out["r_precision"] = float(np.mean(rprec))
        out["precision@1"] = float(np.mean(p1))
        out["minp"] = float(np.mean(inps))
    out["num_valid_queries"] = n
    out["num_skipped_queries"] = skipped
    return out


def reference_k_reciprocal(
    query: Any,
    gallery: Any | None,
    metric: str = "cosine",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Dense k-reciprocal re-ranking (Zhong et al. 2017), step by step, in float64.

    Follows the published algorithm: all-pairs squared distances, each row divided by its maximum,
    k-reciprocal sets with the two-thirds expansion rule, Gaussian weights, local query expansion
    over the k2 nearest, Jaccard distance, and the lambda mix. Sorting is stable (ties by index).
    """
    q = _np(query).astype(np.float64)
    x = q if gallery is None else np.concatenate([q, _np(gallery).astype(np.float64)])
    if metric == "cosine":
        x = x / np.maximum(np.sqrt((x * x).sum(1, keepdims=True)), 1e-12)
    n = len(x)
    num_q = len(q)
    dist = np.stack([((x - x[i]) ** 2).sum(1) for i in range(n)])
    dist = dist / dist.max(axis=1, keepdims=True)
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i: int, k: int) -> list[int]:
        forward = rank[i, : k + 1]
        return [int(j) for j in forward if i in rank[j, : k + 1]]

    v = np.zeros((n, n))
    half = int(np.around(k1 / 2))
    for i in range(n):
        r_i = reciprocal(i, k1)
        expansion = set(r_i)
        for c in r_i:
            r_c = reciprocal(c, half)
            if len(set(r_c) & set(r_i)) > 2 / 3 * len(r_c):
                expansion |= set(r_c)
        idx = np.array(sorted(expansion))
        w = np.exp(-dist[i, idx])
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    offset = 0 if gallery is None else num_q
    out = np.empty((num_q, n - offset))
    for i in range(num_q):
        for j in range(offset, n):
            s = np.minimum(v[i], v[j]).sum()
            jac = 1.0 - s / (2.0 - s)
            out[i, j - offset] = (1 - lambda_value) * jac + lambda_value * dist[i, j]
    return out
