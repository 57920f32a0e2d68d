"""Pair verification (LFW's protocol): is each pair of images the same identity?

The pairs are split into ``folds`` contiguous, equal blocks in their given order. For each
fold, the distance threshold is chosen on the other folds: among the midpoints between
consecutive distinct distances (plus −∞ and +∞), the first (smallest) one reaching the best
accuracy when "same" is predicted for ``distance < threshold``; the fold's accuracy is then
measured with that threshold. ``accuracy`` is the mean over folds, ``accuracy_std`` their
population standard deviation (as LFW results are reported, e.g. FaceNet's 99.63 % ± 0.09),
``threshold`` the mean threshold. The ROC (``auc``, ``eer``, ``tpr@fpr=…``) is over all pairs,
scored by −distance (scikit-learn).

Video pairs (YouTube Faces) compare two sets of frame embeddings: :func:`set_distances` gives
FaceNet's video distance, the mean of the **squared** euclidean distances over all frame
pairs (its default), or the distance of the mean embeddings, and :func:`verify_distances`
runs the same protocol on those distances; the thresholds it reports are then squared
distances too. :func:`frame_distance` is the frame distance ``embedlab evaluate`` uses for a
run: squared euclidean for a euclidean run, cosine for a cosine one (for L2-normalised
embeddings half the squared euclidean distance, so the same decisions at half the threshold).

The embeddings may be torch tensors or numpy arrays; distances are computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import Distance, pairwise_distance
from embedlab.errors import ConfigError
from embedlab.metrics._inputs import ArrayLike, as_embeddings
from embedlab.options import SetDistance

__all__ = [
    "SetDistance",
    "frame_distance",
    "pair_distances",
    "set_distances",
    "verify",
    "verify_distances",
]


FPR_POINTS = (0.001, 0.01)


def pair_distances(a: ArrayLike, b: ArrayLike, distance: Distance = "euclidean") -> Tensor:
    """Row-wise distance of ``a[i]`` and ``b[i]`` (float64; tensors or numpy arrays):
    euclidean, squared or cosine."""
    try:
        a = as_embeddings(a, "embeddings1", dtype=torch.float64)
        b = as_embeddings(b, "embeddings2", a.device, dtype=torch.float64)
    except ValueError as err:  # one line from the command line, as the other input errors
        raise ConfigError(str(err)) from None
    if a.shape != b.shape:
        raise ConfigError(f"embeddings1 {tuple(a.shape)} and embeddings2 {tuple(b.shape)} differ")
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1)
    squared = (a - b).square().sum(1)
    return squared if distance == "squared_euclidean" else squared.sqrt()


def _best_threshold(d: np.ndarray, same: np.ndarray) -> float:
    """The first threshold (midpoints of distinct distances, ±∞) of best accuracy on (d, same)."""
    values = np.unique(d)
    candidates = np.concatenate([[-np.inf], (values[1:] + values[:-1]) / 2, [np.inf]])
    positives, negatives = np.sort(d[same]), np.sort(d[~same])
    true_pos = np.searchsorted(positives, candidates, side="left")  # same and d < t
    true_neg = len(negatives) - np.searchsorted(negatives, candidates, side="left")
    return float(candidates[np.argmax(true_pos + true_neg)])


def set_distances(
    first: Sequence[ArrayLike],
    second: Sequence[ArrayLike],
    distance: Distance = "squared_euclidean",
    aggregate: SetDistance = "mean_pairwise",
) -> Tensor:
    """Distance of each pair of embedding sets ``(first[i] [n_i, D], second[i] [m_i, D])``
    (float64; tensors or numpy arrays), with ``distance`` between two embeddings:

    * ``mean_pairwise``: (1 / n_i·m_i) Σ_j Σ_k distance(first[i][j], second[i][k]), the mean
      over all frame pairs. With the default ``squared_euclidean`` this is FaceNet's video
      distance on YouTube Faces, (1 / n·m) Σ_j Σ_k ‖a_j − b_k‖², and a threshold chosen on
      it (:func:`verify_distances`) is a squared distance.
    * ``mean_embedding``: distance(mean_j first[i][j], mean_k second[i][k]).
    """
    if len(first) != len(second):
        raise ConfigError(f"{len(first)} first sets for {len(second)} second sets")
    values = []
    for i, (a_, b_) in enumerate(zip(first, second, strict=True)):
        a, b = torch.as_tensor(a_), torch.as_tensor(b_)
        if a.ndim != 2 or b.ndim != 2 or not len(a) or not len(b):
            raise ConfigError(
                f"pair {i}: sets {tuple(a.shape)} and {tuple(b.shape)} are not [n, D]"
            )
        a, b = a.double(), b.to(device=a.device, dtype=torch.float64)
        if aggregate == "mean_embedding":
            values.append(
                pair_distances(a.mean(0, keepdim=True), b.mean(0, keepdim=True), distance)[0]
            )
        else:
            values.append(pairwise_distance(a, b, distance).mean())
    return torch.stack(values) if values else torch.zeros(0, dtype=torch.float64)


def frame_distance(distance: str) -> Distance:
    """The frame distance of a run's video pairs: ``squared_euclidean`` for a ``euclidean``
    run (FaceNet's), otherwise the run's own (``cosine``)."""
    if distance in ("euclidean", "squared_euclidean"):
        return "squared_euclidean"
    if distance == "cosine":
        return "cosine"
    raise ConfigError(f"distance: expected euclidean or cosine, got {distance!r}")


def verify(
    embeddings1: ArrayLike,
    embeddings2: ArrayLike,
    is_same: Tensor | np.ndarray,
    folds: int = 10,
    distance: Distance = "euclidean",
) -> dict[str, Any]:
    """The verification protocol of the module docstring over pairs ``(embeddings1[i],
    embeddings2[i])`` (torch tensors or numpy arrays, [N, D]); ``is_same`` (bool, one per
    pair). The thresholds are in ``distance`` units. Returns ``accuracy``, ``accuracy_std``,
    ``threshold``, ``fold_accuracy``, ``fold_threshold``, ``auc``, ``eer``, ``tpr@fpr=0.001``,
    ``tpr@fpr=0.01`` and the ROC curve (``fpr``, ``tpr``)."""
    return verify_distances(pair_distances(embeddings1, embeddings2, distance), is_same, folds)


def verify_distances(
    distances: Tensor | np.ndarray, is_same: Tensor | np.ndarray, folds: int = 10
) -> dict[str, Any]:
    """:func:`verify` on given pair distances (one per pair, smaller = more alike)."""
    d = np.asarray(
        distances.cpu().numpy() if isinstance(distances, Tensor) else distances, dtype=np.float64
    ).reshape(-1)
    flags = is_same.cpu().numpy() if isinstance(is_same, Tensor) else is_same
    same = np.asarray(flags, dtype=bool).reshape(-1)
    n = len(d)
    if len(same) != n:
        raise ConfigError(f"is_same has {len(same)} entries for {n} pairs")
    if folds < 2 or n % folds:
        raise ConfigError(f"folds={folds}: the {n} pairs do not split into equal folds")
    if not np.isfinite(d).all():
        raise ConfigError("embeddings: a pair distance is not finite")
    block = np.arange(n) // (n // folds)
    accuracy, thresholds = np.empty(folds), np.empty(folds)
    for k in range(folds):
        test = block == k
        thresholds[k] = _best_threshold(d[~test], same[~test])
        accuracy[k] = np.mean((d[test] < thresholds[k]) == same[test])
    results: dict[str, Any] = {
        "accuracy": float(accuracy.mean()),
        "accuracy_std": float(accuracy.std()),
        "threshold": float(thresholds.mean()),
        "fold_accuracy": accuracy.tolist(),
        "fold_threshold": thresholds.tolist(),
    }
    if same.all() or not same.any():
        return results  # no ROC with a single class
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(same, -d)
    fnr = 1.0 - tpr
    at = int(np.argmin(np.abs(fnr - fpr)))
    results.update(
        {
            "auc": float(roc_auc_score(same, -d)),
            "eer": float((fpr[at] + fnr[at]) / 2),
            **{f"tpr@fpr={x:g}": float(tpr[fpr <= x].max()) for x in FPR_POINTS},
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
        }
    )
    return results
