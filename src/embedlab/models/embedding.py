"""EmbeddingModel: backbone → pooling → optional projection → optional BNNeck → optional L2."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.constraints import PositiveInt, UnitInterval
from embedlab.models.backbones import SmallCNN
from embedlab.models.pooling import AvgPool
from embedlab.models.temporal import TemporalAverage


class EmbeddingOutput(NamedTuple):
    """``features`` feed the metric losses (before BNNeck, as in Bag of Tricks);
    ``embedding`` is the retrieval embedding (after BNNeck and normalisation)."""

    features: Tensor
    embedding: Tensor


class EmbeddingModel(nn.Module):
    """Maps images to embeddings.

    Args:
        backbone: any module returning ``[B, C, H, W]`` and exposing ``out_channels``
            (e.g. ``embedlab.models.ResNet``, ``TimmBackbone``, ``SmallCNN``).
        pooling: global pooling ``[B, C, H, W] → [B, C]``, any module by ``class_path``, e.g.
            ``embedlab.models.GeM`` with ``init_args: {p: 3, learnable: true}``; ``None``:
            ``AvgPool``.
        embedding_dim: size of a linear projection after pooling; ``None`` keeps ``C``.
        bnneck: batch-norm neck (Luo et al. 2019); metric losses use the features before it,
            retrieval and the identity classifier use the features after it.
        normalize: L2-normalise the retrieval embedding (and the features when there is no BNNeck).
        dropout: dropout probability on the pooled features, before the projection.
        flip_test: in eval mode, embed each image and its horizontal mirror and average the
            two embeddings (re-normalised when ``normalize``), the flip test-time augmentation
            common in ReID evaluation. Training is unaffected.
        temporal: for clips ``[B, T, C, H, W]`` (video ReID, ``embedlab.data.Mars``): how
            the T pooled frame features become one, ``embedlab.models.TemporalAverage``
            (default) or ``TemporalAttention``.
        frame_chunk: in eval mode, the frames of clips go through the backbone at most this
            many at a time (their pooled features, ``[T, C]``, are then pooled over time as a
            whole), so a whole tracklet (``eval_sampling: all``) fits in memory. Training
            embeds a batch at once (batch norm sees all of it).

    Under DDP, ``--trainer.sync_batchnorm=true`` turns every batch norm (backbone and BNNeck)
    into ``SyncBatchNorm``.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        pooling: nn.Module | None = None,
        embedding_dim: PositiveInt | None = None,
        bnneck: bool = False,
        normalize: bool = False,
        dropout: UnitInterval = 0.0,
        flip_test: bool = False,
        temporal: nn.Module | None = None,
        frame_chunk: PositiveInt = 64,
    ) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else SmallCNN()
        channels = getattr(self.backbone, "out_channels", None)
        if not isinstance(channels, int):
            raise ValueError("backbone must expose an integer attribute `out_channels`")
        self.pool = pooling if pooling is not None else AvgPool()
        # clips [B, T, C, H, W]: frame features pooled over T (default: their mean)
        self.temporal = temporal if temporal is not None else TemporalAverage()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection: nn.Module = (
            nn.Linear(channels, embedding_dim) if embedding_dim is not None else nn.Identity()
        )
        self.embedding_dim = embedding_dim if embedding_dim is not None else channels
        self.neck: nn.Module = nn.Identity()
        if bnneck:
            neck = nn.BatchNorm1d(self.embedding_dim)
            neck.bias.requires_grad_(False)  # BNNeck: no shift
            self.neck = neck
        self.bnneck = bnneck
        self.normalize = normalize
        self.flip_test = flip_test
        self.frame_chunk = frame_chunk

    def _frame_features(self, frames: Tensor) -> Tensor:
        """Pooled features ``[N, C]`` of frames ``[N, C, H, W]`` (chunked in eval mode)."""
        if self.training or frames.shape[0] <= self.frame_chunk:
            return self.pool(self.backbone(frames))
        return torch.cat([self.pool(self.backbone(c)) for c in frames.split(self.frame_chunk)])

    def forward_train(self, images: Tensor) -> EmbeddingOutput:
        if images.ndim == 5:  # a clip per item: embed the frames, pool them over time
            b, t = images.shape[:2]
            frames = self._frame_features(images.flatten(0, 1))
            pooled = self.temporal(frames.reshape(b, t, *frames.shape[1:]))
        else:
            pooled = self.pool(self.backbone(images))
        features = self.projection(self.dropout(pooled))
        embedding = self.neck(features)
        if self.normalize:
            embedding = F.normalize(embedding, dim=-1)
            if not self.bnneck:
                features = embedding
        return EmbeddingOutput(features=features, embedding=embedding)

    def forward(self, images: Tensor) -> Tensor:
        embedding = self.forward_train(images).embedding
        if self.flip_test and not self.training:
            embedding = 0.5 * (embedding + self.forward_train(images.flip(-1)).embedding)
            if self.normalize:
                embedding = F.normalize(embedding, dim=-1)
        return embedding
