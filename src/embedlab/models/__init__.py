"""Embedding models: backbones, pooling, temporal pooling of clips, BNNeck."""

from embedlab.models.backbones import ResNet, SmallCNN, TimmBackbone, TorchvisionBackbone
from embedlab.models.bninception import BNInception
from embedlab.models.embedding import EmbeddingModel, EmbeddingOutput
from embedlab.models.pooling import AvgPool, ClsToken, GeM, GeMTokens, MeanTokens
from embedlab.models.temporal import TemporalAttention, TemporalAverage

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
    "TemporalAttention",
    "TemporalAverage",
    "TimmBackbone",
    "TorchvisionBackbone",
]
