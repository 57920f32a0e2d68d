"""Supervised contrastive loss, SupCon (Khosla et al., NeurIPS 2020); NT-Xent with one positive."""

from __future__ import annotations

from torch import Tensor

from embedlab.distances import cosine_similarity, label_masks
from embedlab.losses.base import MetricLoss, masked_logsumexp, masked_mean


class SupConLoss(MetricLoss):
    """L(a) = −1/|P(a)| · Σ_{p∈P(a)} log[exp(s_ap/τ) / Σ_{k≠a} exp(s_ak/τ)]  (L_out of the paper).

    s are cosine similarities; P(a) the other samples of a's class. With exactly one
    positive per anchor (two views of each image) it is NT-Xent (Chen et al., SimCLR).

    Args:
        temperature: τ (0.1; the paper's 0.1, SimCLR's NT-Xent 0.5).

    Reduction: mean over the anchors that have a positive. A batch without a positive pair
    gives a zero loss (and a warning when ``stats`` are read). ``stats``: ``pos_sim``,
    ``neg_sim``.

    ``ref_embeddings``/``ref_labels`` (e.g. from ``CrossBatchMemory``) add references: the
    columns of the distance matrix are the batch followed by them (without gradient).
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        s = cosine_similarity(embeddings, ref_embeddings)
        positive, negative = label_masks(labels, ref_labels)
        logits = s / self.temperature
        log_prob = logits - masked_logsumexp(logits, positive | negative)[:, None]
        has_pos = positive.any(1)
        per_anchor = -(log_prob * positive).sum(1) / positive.sum(1).clamp_min(1)
        loss = masked_mean(per_anchor, has_pos & negative.any(1))

        def stats() -> dict[str, Tensor]:
            return {"pos_sim": masked_mean(s, positive), "neg_sim": masked_mean(s, negative)}

        self._keep_stats(stats, (has_pos & negative.any(1)).sum())
        return loss
