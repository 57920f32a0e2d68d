"""Metric-learning losses of the seed papers; each is ``loss(embeddings, labels) -> scalar``."""

from embedlab.losses.base import MetricLoss
from embedlab.losses.triplet import TripletLoss

__all__ = ["MetricLoss", "TripletLoss"]
