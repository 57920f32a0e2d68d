"""Triplet miners: objects that pick the triplets a triplet-based loss sees."""

from embedlab.miners.base import PairMiner, PairSelection, TripletMiner, TripletSelection
from embedlab.miners.batch_all import BatchAllMiner
from embedlab.miners.batch_hard import BatchHardMiner
from embedlab.miners.distance_weighted import DistanceWeightedMiner
from embedlab.miners.multi_similarity import MultiSimilarityMiner
from embedlab.miners.semi_hard import SemiHardMiner

__all__ = [
    "BatchAllMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "MultiSimilarityMiner",
    "PairMiner",
    "PairSelection",
    "SemiHardMiner",
    "TripletMiner",
    "TripletSelection",
]
