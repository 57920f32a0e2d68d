"""Triplet miners: objects that pick the triplets a triplet-based loss sees."""

from embedlab.miners.base import TripletMiner, TripletSelection
from embedlab.miners.batch_all import BatchAllMiner
from embedlab.miners.batch_hard import BatchHardMiner
from embedlab.miners.distance_weighted import DistanceWeightedMiner
from embedlab.miners.semi_hard import SemiHardMiner

__all__ = [
    "BatchAllMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "SemiHardMiner",
    "TripletMiner",
    "TripletSelection",
]
