"""A retrieval metric defined outside embedlab, plugged in by class_path in the tests."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.metrics import RankMetric


class NDCG(RankMetric):
    """Binary-relevance NDCG@k from the ranks of the positives."""

    def __init__(self, k: int = 10) -> None:
        self.k = k
        self.name = f"ndcg@{k}"

    def __call__(self, ranks: Tensor, num_positives: Tensor) -> Tensor:
        gains = torch.where(ranks <= self.k, 1.0 / torch.log2(ranks + 1), 0.0).sum(1)
        positions = torch.arange(1, self.k + 1, dtype=torch.float64)
        ideal_gain = 1.0 / torch.log2(positions + 1)
        ideal = torch.where(positions[None, :] <= num_positives[:, None], ideal_gain, 0.0).sum(1)
        return gains / ideal
