"""Option values that the library and the commands share: plain constants and ``Literal``
types, importable without torch (``embedlab <command> --help`` reads them)."""

from __future__ import annotations

from typing import Literal, TypeAlias

#: How ``map`` is computed: ``torchreid`` (the mean precision at the positives, as torchreid's
#: ``eval_market1501``) or ``official`` (the trapezoidal AP of the datasets' MATLAB code).
Convention: TypeAlias = Literal["torchreid", "official"]
CONVENTIONS: tuple[Convention, ...] = ("torchreid", "official")

#: The metric that selects checkpoints and sorts tables (Musgrave et al., ECCV 2020).
PRIMARY_METRIC = "map@r"

#: How two sets of frame embeddings (YouTube Faces videos) are compared.
SetDistance = Literal["mean_pairwise", "mean_embedding"]

#: The evaluation protocols of ``embedlab evaluate``.
Protocol = Literal["retrieval", "cuhksysu", "verification"]

#: The ImageNet statistics pretrained backbones expect (RGB, 0-1 scale).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
