"""Embedding models: backbones, pooling, BNNeck."""

from embedlab.models.backbones import ResNet, SmallCNN, TimmBackbone, TorchvisionBackbone
from embedlab.models.embedding import EmbeddingModel, EmbeddingOutput
from embedlab.models.pooling import AvgPool, GeM

__all__ = [
    "AvgPool",
    "EmbeddingModel",
    "EmbeddingOutput",
    "GeM",
    "ResNet",
    "SmallCNN",
    "TimmBackbone",
    "TorchvisionBackbone",
]
