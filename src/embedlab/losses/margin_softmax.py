"""Additive-margin softmax losses: ArcFace (Deng et al., CVPR 2019), CosFace (Wang et al.,
CVPR 2018) and sub-center ArcFace (Deng et al., ECCV 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distances import pairwise_distance
from embedlab.losses.base import MetricLoss, check_sizes


class _MarginSoftmax(MetricLoss):
    """Cross-entropy over s·cos θ_j with a margin on the target class; a weight row per class."""

    def __init__(
        self,
        num_classes: int | None,
        embedding_dim: int | None,
        margin: float,
        scale: float,
        sub_centers: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.margin = margin
        self.scale = scale
        self.sub_centers = sub_centers
        self.weight = nn.Parameter(torch.empty(0, 0))
        if num_classes is not None and embedding_dim is not None:
            self.set_sizes(num_classes, embedding_dim)

    def set_sizes(self, num_classes: int, embedding_dim: int) -> None:
        """Create the class weights (called by the module with the data's classes and the
        model's embedding size; sizes given to the constructor must agree)."""
        check_sizes(self, num_classes, embedding_dim)
        self.num_classes, self.embedding_dim = num_classes, embedding_dim
        shape = (num_classes * self.sub_centers, embedding_dim)
        if tuple(self.weight.shape) != shape:
            self.weight = nn.Parameter(torch.empty(shape))
            nn.init.xavier_normal_(self.weight)

    def target_logit(self, cos: Tensor) -> Tensor:
        """The margin-penalised cosine of the target class."""
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cos = 1.0 - pairwise_distance(embeddings, self.weight, distance="cosine")  # [B, C·K]
        classes = self.weight.shape[0] // self.sub_centers
        cos = cos.view(len(labels), classes, self.sub_centers).amax(2)  # nearest sub-centre
        target = F.one_hot(labels, classes).bool()
        logits = self.scale * torch.where(target, self.target_logit(cos), cos)
        loss = F.cross_entropy(logits, labels)

        def stats() -> dict[str, Tensor]:
            cos_y = cos[target]
            return {
                "target_angle": torch.rad2deg(torch.acos(cos_y.clamp(-1, 1))).mean(),
                "accuracy": (logits.argmax(1) == labels).float().mean(),
            }

        self._keep_stats(stats)
        return loss


class ArcFaceLoss(_MarginSoftmax):
    """L = −log[e^{s·cos(θ_y + m)} / (e^{s·cos(θ_y + m)} + Σ_{j≠y} e^{s·cos θ_j})].

    θ_j is the angle between the embedding and class j's weight. Where θ_y + m would pass π
    the target logit is cos θ_y − m·sin m instead, which keeps it decreasing in θ_y (the
    authors' code). cos(θ + m) is computed as cos θ·cos m − sin θ·sin m, finite at θ = 0.

    Args:
        num_classes, embedding_dim: the shape of ``weight`` (num_classes × embedding_dim);
            ``None``: the data's classes and the model's embedding size.
        margin: m, in radians (0.5 ≈ 28.6°).
        scale: s (64).

    Usable as the identity term of a ReID recipe in place of cross-entropy (on the BNNeck
    output). ``stats``: ``target_angle`` (degrees), ``accuracy``.
    """

    def __init__(
        self,
        num_classes: int | None,
        embedding_dim: int | None,
        margin: float = 0.5,
        scale: float = 64.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, margin, scale)

    def target_logit(self, cos: Tensor) -> Tensor:
        sin = (1.0 - cos.square()).clamp_min(1e-12).sqrt()
        shifted = cos * math.cos(self.margin) - sin * math.sin(self.margin)  # cos(θ + m)
        return torch.where(
            cos >= math.cos(math.pi - self.margin),
            shifted,
            cos - self.margin * math.sin(self.margin),
        )


class CosFaceLoss(_MarginSoftmax):
    """L = −log[e^{s·(cos θ_y − m)} / (e^{s·(cos θ_y − m)} + Σ_{j≠y} e^{s·cos θ_j})].

    Args:
        num_classes, embedding_dim: the shape of ``weight`` (num_classes × embedding_dim);
            ``None``: the data's classes and the model's embedding size.
        margin: m, subtracted from the target cosine (0.35).
        scale: s (64).

    ``stats``: ``target_angle`` (degrees), ``accuracy``.
    """

    def __init__(
        self,
        num_classes: int | None,
        embedding_dim: int | None,
        margin: float = 0.35,
        scale: float = 64.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, margin, scale)

    def target_logit(self, cos: Tensor) -> Tensor:
        return cos - self.margin


class SubCenterArcFaceLoss(ArcFaceLoss):
    """ArcFace with K sub-centres per class: cos θ_j = max_k cos(x, w_jk).

    Noisy or multi-modal classes spread over several sub-centres instead of pulling every
    sample to one. ``weight`` has num_classes·K rows, class j's sub-centres at rows
    j·K … j·K + K − 1.

    Args:
        num_classes, embedding_dim, margin, scale: as ``ArcFaceLoss``.
        sub_centers: K (3).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        margin: float = 0.5,
        scale: float = 64.0,
        sub_centers: int = 3,
    ) -> None:
        _MarginSoftmax.__init__(self, num_classes, embedding_dim, margin, scale, sub_centers)
