"""Clustering quality of embeddings: NMI between labels and a faiss k-means clustering."""

from __future__ import annotations

import faiss
import numpy as np
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor

__all__ = ["nmi_kmeans"]


def nmi_kmeans(
    embeddings: Tensor,
    labels: Tensor,
    distance: str = "cosine",
    seed: int = 0,
    niter: int = 20,
    nredo: int = 5,
) -> float:
    """Normalised mutual information between ``labels`` and a k-means clustering.

    k-means (faiss, ``k`` = number of distinct labels, fixed ``seed``) runs on the embeddings,
    L2-normalised first for ``distance="cosine"``; NMI uses the arithmetic-mean normalisation
    (scikit-learn's default). The best of ``nredo`` k-means runs (lowest objective) is kept.
    """
    x = F.normalize(embeddings, dim=1) if distance == "cosine" else embeddings
    xn = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    y = labels.detach().cpu().numpy()
    k = len(np.unique(y))
    if k < 2 or len(y) <= k:
        return 1.0 if k == 1 else 0.0
    km = faiss.Kmeans(
        xn.shape[1],
        k,
        niter=niter,
        nredo=nredo,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
    )
    km.train(xn)
    _, assign = km.index.search(xn, 1)
    return float(normalized_mutual_info_score(y, assign.ravel()))
