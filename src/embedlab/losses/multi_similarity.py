"""Multi-similarity loss (Wang, Han, Huang, Dong, Scott, CVPR 2019)."""

from __future__ import annotations

from torch import Tensor

from embedlab.distances import cosine_similarity, label_masks
from embedlab.losses.base import MetricLoss, masked_logsumexp, masked_mean
from embedlab.miners.base import PairMiner, PairSelection


class MultiSimilarityLoss(MetricLoss):
    """L = 1/m·Σ_a { 1/α·log[1 + Σ_{p∈P_a} exp(−α(S_ap − λ))] + 1/β·log[1 + Σ_{n∈N_a} exp(β(S_an − λ))] }.

    S are cosine similarities; P_a, N_a the anchor's positive and negative pairs, all of
    them or those a ``miner`` keeps (the paper pairs the loss with
    ``embedlab.miners.MultiSimilarityMiner(epsilon=0.1)``).

    Args:
        alpha: α, the scale of the positive term (2).
        beta: β, the scale of the negative term (50).
        base: λ, the similarity margin (0.5, the authors' code; the paper writes λ = 1).
        miner: a ``PairMiner`` choosing the pairs; ``None`` keeps every pair.

    Reduction: mean over all m anchors of the batch. A batch without a positive or a
    negative pair gives a zero loss (and a warning when ``stats`` are read). ``stats``:
    ``pos_pairs``, ``neg_pairs`` (kept per anchor), ``pos_sim``, ``neg_sim``.

    ``ref_embeddings``/``ref_labels`` (e.g. from ``CrossBatchMemory``) add references: the
    columns of the distance matrix are the batch followed by them (without gradient).
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        miner: PairMiner | None = None,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.miner = miner

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        s = cosine_similarity(embeddings, ref_embeddings)
        positive, negative = label_masks(labels, ref_labels)
        pairs = (
            PairSelection(positive, negative)
            if self.miner is None
            else self.miner(s.detach(), labels, ref_labels)
        )
        pos = masked_logsumexp(-self.alpha * (s - self.base), pairs.positive, add_one=True)
        neg = masked_logsumexp(self.beta * (s - self.base), pairs.negative, add_one=True)
        usable = positive.any() & negative.any()
        loss = (pos / self.alpha + neg / self.beta).mean() * usable

        def stats() -> dict[str, Tensor]:
            n = len(labels)
            return {
                "pos_pairs": pairs.positive.sum() / n,
                "neg_pairs": pairs.negative.sum() / n,
                "pos_sim": masked_mean(s, positive),
                "neg_sim": masked_mean(s, negative),
            }

        self._keep_stats(stats, usable)
        return loss
