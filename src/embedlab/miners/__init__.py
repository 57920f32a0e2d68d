"""Triplet miners: objects that pick the triplets a triplet-based loss sees."""

from embedlab.miners.base import TripletMiner, TripletSelection
from embedlab.miners.batch_hard import BatchHardMiner

__all__ = ["BatchHardMiner", "TripletMiner", "TripletSelection"]
