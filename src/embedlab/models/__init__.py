"""Embedding models: backbones, pooling, BNNeck."""

from embedlab.models.backbones import ResNet, SmallCNN, TimmBackbone, TorchvisionBackbone
from embedlab.models.bninception import BNInception
from embedlab.models.embedding import EmbeddingModel, EmbeddingOutput
from embedlab.models.pooling import AvgPool, ClsToken, GeM, GeMTokens, MeanTokens

__all__ = [
    "AvgPool",
    "BNInception",
    "ClsToken",
    "EmbeddingModel",
    "EmbeddingOutput",
    "GeM",
    "GeMTokens",
    "MeanTokens",
    "ResNet",
    "SmallCNN",
    "TimmBackbone",
    "TorchvisionBackbone",
]
