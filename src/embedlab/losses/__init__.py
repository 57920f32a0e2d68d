"""Metric-learning losses of the seed papers.

Each is an ``nn.Module`` called as ``loss(embeddings, labels) -> scalar`` (except
:class:`CrossEntropyLoss`, called on logits) that fills ``loss.stats`` after a call.
"""

from embedlab.losses.base import MetricLoss
from embedlab.losses.center import CenterLoss
from embedlab.losses.contrastive import ContrastiveLoss
from embedlab.losses.coupled_clusters import CoupledClustersLoss
from embedlab.losses.cross_entropy import CrossEntropyLoss
from embedlab.losses.improved_triplet import ImprovedTripletLoss
from embedlab.losses.interface import Loss
from embedlab.losses.margin import MarginLoss
from embedlab.losses.msml import MSMLLoss
from embedlab.losses.quadruplet import QuadrupletLoss
from embedlab.losses.ranked_list import RankedListLoss
from embedlab.losses.triplet import TripletLoss

__all__ = [
    "CenterLoss",
    "ContrastiveLoss",
    "CoupledClustersLoss",
    "CrossEntropyLoss",
    "ImprovedTripletLoss",
    "Loss",
    "MSMLLoss",
    "MarginLoss",
    "MetricLoss",
    "QuadrupletLoss",
    "RankedListLoss",
    "TripletLoss",
]
