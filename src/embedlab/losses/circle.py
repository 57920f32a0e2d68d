"""Circle loss (Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei, CVPR 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.distances import cosine_similarity, label_masks
from embedlab.losses.base import MetricLoss, masked_logsumexp, masked_mean


class CircleLoss(MetricLoss):
    """L(a) = log[1 + Σ_n exp(γ·α_n·(s_n − Δ_n)) · Σ_p exp(−γ·α_p·(s_p − Δ_p))].

    s are cosine similarities of the anchor to its positives (s_p) and negatives (s_n);
    α_p = [1 + m − s_p]₊ and α_n = [s_n + m]₊ are self-paced weights, constants in the
    backward pass (as in the authors' code); Δ_p = 1 − m, Δ_n = m.

    Args:
        m: the relaxation margin (0.25 for ReID; 0.4 for fine-grained retrieval).
        gamma: the scale γ (128 for ReID; 80 for fine-grained retrieval; Sun et al. Table 1).

    Reduction: mean over the anchors that have a positive and a negative. No such anchor:
    zero loss (and a warning when ``stats`` are read). ``stats``: ``pos_sim``, ``neg_sim``.

    ``ref_embeddings``/``ref_labels`` (e.g. from ``CrossBatchMemory``) add references: the
    columns of the distance matrix are the batch followed by them (without gradient).
    """

    def __init__(self, m: float = 0.25, gamma: float = 128.0) -> None:
        super().__init__()
        self.m = m
        self.gamma = gamma

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        s = cosine_similarity(embeddings, ref_embeddings)
        positive, negative = label_masks(labels, ref_labels)
        alpha_p = F.relu(1.0 + self.m - s.detach())  # α_p = [O_p − s_p]₊, O_p = 1 + m
        alpha_n = F.relu(s.detach() + self.m)  # α_n = [s_n − O_n]₊, O_n = −m
        logit_p = -self.gamma * alpha_p * (s - (1.0 - self.m))  # −γ·α_p·(s_p − Δ_p)
        logit_n = self.gamma * alpha_n * (s - self.m)  # γ·α_n·(s_n − Δ_n)
        lse = masked_logsumexp(logit_p, positive) + masked_logsumexp(logit_n, negative)
        valid = positive.any(1) & negative.any(1)
        loss = masked_mean(F.softplus(lse), valid)  # log(1 + e^lse)

        def stats() -> dict[str, Tensor]:
            return {"pos_sim": masked_mean(s, positive), "neg_sim": masked_mean(s, negative)}

        self._keep_stats(stats, valid.sum())
        return loss
