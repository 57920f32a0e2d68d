"""Triplet loss (FaceNet, Schroff et al. 2015; batch-hard / soft margin, Hermans et al. 2017)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import pairwise_distance, references
from embedlab.losses.base import MetricLoss, masked_mean, mine
from embedlab.miners import BatchHardMiner, TripletMiner
from embedlab.miners.base import hinge_sum


class TripletLoss(MetricLoss):
    """ℓ(a, p, n) = [m + d(a, p) − d(a, n)]₊, or ln(1 + exp(d(a, p) − d(a, n))) with a soft margin.

    Args:
        margin: m, the gap wanted between negative and positive distances (0.3: the
            Bag-of-Tricks ReID baseline, Luo et al. 2019, on plain euclidean distances;
            FaceNet uses α = 0.2 on squared distances of L2-normalised embeddings).
            Ignored when ``soft_margin``.
        miner: which triplets: ``BatchHardMiner()`` (default; one term per anchor),
            ``SemiHardMiner()`` (one per anchor–positive pair), ``BatchAllMiner()``
            (every valid triplet), ``DistanceWeightedMiner()``.
        squared: use squared euclidean distances d² (FaceNet) instead of d (Hermans).
        soft_margin: replace the hinge by softplus (Hermans et al.'s default for
            batch-hard); then every term is active and ``nonzero_mean`` changes nothing.
        nonzero_mean: average over the terms with non-zero loss only (Hermans et al.
            recommend it for batch-all) instead of over all valid terms.

    Returns the mean over the miner's valid terms. A batch with no valid triplet gives a
    zero loss (and a warning when ``stats`` are read). ``stats``: ``active_fraction``,
    ``pos_dist``, ``neg_dist``.

    ``ref_embeddings``/``ref_labels`` (e.g. from ``CrossBatchMemory``) add references: the
    columns of the distance matrix are the batch followed by them (without gradient).
    """

    def __init__(
        self,
        margin: float = 0.3,
        miner: TripletMiner | None = None,
        squared: bool = False,
        soft_margin: bool = False,
        nonzero_mean: bool = False,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.miner = miner if miner is not None else BatchHardMiner()
        self.squared = squared
        self.soft_margin = soft_margin
        self.nonzero_mean = nonzero_mean

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        dist = pairwise_distance(embeddings, references(embeddings, ref_embeddings))
        sel = mine(self.miner, dist, labels, embeddings.shape[1], ref_labels)
        d_ap, d_an = sel.distances(dist)
        ap, an = (d_ap**2, d_an**2) if self.squared else (d_ap, d_an)
        if sel.negatives is None:  # one negative per slot
            # ln(1 + exp(d(a,p) − d(a,n)))  or  [m + d(a,p) − d(a,n)]₊
            terms = F.softplus(ap - an) if self.soft_margin else F.relu(self.margin + ap - an)
            valid = sel.valid.to(terms.dtype)
            total, n_active = (terms * valid).sum(), ((terms > 0) * valid).sum()
        elif self.soft_margin:  # batch-all, soft margin: the explicit [N, N, N] block
            triplets = sel.valid[:, :, None] & sel.negatives[:, None, :]
            terms = F.softplus(ap[:, :, None] - an[:, None, :])
            total, n_active = (terms * triplets).sum(), triplets.sum()
        else:  # batch-all: Σ_n [m + d(a,p) − d(a,n)]₊ without the [N, N, N] block
            sums, active = hinge_sum(self.margin + ap, an, sel.negatives)
            total, n_active = (sums * sel.valid).sum(), (active * sel.valid).sum()
        count = sel.count()
        loss = total / (n_active if self.nonzero_mean else count).clamp_min(1)

        def stats() -> dict[str, Tensor]:
            negatives = sel.valid if sel.negatives is None else sel.negatives
            return {
                "active_fraction": n_active / count.clamp_min(1),
                "pos_dist": masked_mean(d_ap, sel.valid),
                "neg_dist": masked_mean(d_an, negatives),
            }

        self._keep_stats(stats, count)
        return loss
