"""Metric-learning losses of the seed papers.

Each is an ``nn.Module`` called as ``loss(embeddings, labels) -> scalar`` (except
:class:`CrossEntropyLoss`, called on logits) that fills ``loss.stats`` after a call.
"""

from embedlab.losses.base import MetricLoss
from embedlab.losses.center import CenterLoss
from embedlab.losses.circle import CircleLoss
from embedlab.losses.contrastive import ContrastiveLoss, CosineContrastiveLoss
from embedlab.losses.coupled_clusters import CoupledClustersLoss
from embedlab.losses.cross_batch_memory import CrossBatchMemory
from embedlab.losses.cross_entropy import CrossEntropyLoss
from embedlab.losses.improved_triplet import ImprovedTripletLoss
from embedlab.losses.interface import Loss
from embedlab.losses.margin import MarginLoss
from embedlab.losses.margin_softmax import ArcFaceLoss, CosFaceLoss, SubCenterArcFaceLoss
from embedlab.losses.msml import MSMLLoss
from embedlab.losses.multi_similarity import MultiSimilarityLoss
from embedlab.losses.proxy_anchor import ProxyAnchorLoss
from embedlab.losses.quadruplet import QuadrupletLoss
from embedlab.losses.ranked_list import RankedListLoss
from embedlab.losses.supcon import SupConLoss
from embedlab.losses.triplet import TripletLoss

__all__ = [
    "ArcFaceLoss",
    "CircleLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "MultiSimilarityLoss",
    "ProxyAnchorLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "CenterLoss",
    "ContrastiveLoss",
    "CosineContrastiveLoss",
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
