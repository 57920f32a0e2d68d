"""Multi-similarity pair mining (Wang, Han, Huang, Dong, Scott, CVPR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.distances import label_masks
from embedlab.miners.base import PairMiner, PairSelection


class MultiSimilarityMiner(PairMiner):
    """Keeps the informative pairs of each anchor a, by cosine similarity S:

    * a negative n when S_an + ε > min_{p∈P(a)} S_ap (closer than the hardest positive);
    * a positive p when S_ap − ε < max_{n∈N(a)} S_an (farther than the hardest negative).

    Args:
        epsilon: ε, the margin of the comparison (0.1 in the paper).
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        self.epsilon = epsilon

    @torch.no_grad()
    def __call__(
        self, sim: Tensor, labels: Tensor, ref_labels: Tensor | None = None
    ) -> PairSelection:
        positive, negative = label_masks(labels, ref_labels)
        hardest_pos = sim.where(positive, torch.inf).amin(1, keepdim=True)
        hardest_neg = sim.where(negative, -torch.inf).amax(1, keepdim=True)
        keep_neg = negative & (sim + self.epsilon > hardest_pos)
        keep_pos = positive & (sim - self.epsilon < hardest_neg)
        return PairSelection(keep_pos, keep_neg)
