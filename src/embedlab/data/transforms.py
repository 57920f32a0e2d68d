"""Image transforms for person re-identification and deep metric learning.

Two recipes, selectable by name:

* ``"reid"``: the Bag-of-Tricks baseline. Train: resize to 256x128, flip with
  p=0.5, pad 10 pixels and take a random 256x128 crop, normalise with the
  ImageNet statistics, random erasing with p=0.5. Test: resize and normalise.
* ``"dml"``: the usual metric-learning recipe. Train: random resized crop to
  224 (227 for some GoogLeNet/BN-Inception setups) and flip. Test: resize the
  shorter side to 256 and take the centre 224 crop. Both normalise.
* ``"none"``: no augmentation and no normalisation: resize to
  ``height x width`` and scale to [0, 1], for inspection and quick tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torchvision.transforms import v2

Recipe = Literal["reid", "dml", "none"]
RECIPES: tuple[str, ...] = ("reid", "dml", "none")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def build_transforms(
    recipe: Recipe,
    train: bool,
    height: int = 256,
    width: int = 128,
    *,
    crop_size: int = 224,
    resize_size: int = 256,
    flip_p: float = 0.5,
    pad: int = 10,
    erasing_p: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Build the transform for ``recipe`` in training (``train=True``) or test mode.

    ``height`` / ``width`` size the ``reid`` and ``none`` recipes;
    ``crop_size`` / ``resize_size`` size the ``dml`` recipe. The result takes
    a PIL image (or a uint8 tensor) and returns a float tensor ``(3, H, W)``.
    """
    to_tensor = [v2.ToImage()]
    to_float = [v2.ToDtype(torch.float32, scale=True)]
    normalise = [v2.Normalize(mean=list(mean), std=list(std))]
    steps: list[v2.Transform]
    if recipe == "reid":
        size = [height, width]
        if train:
            steps = [
                *to_tensor,
                v2.Resize(size, antialias=True),
                v2.RandomHorizontalFlip(p=flip_p),
                v2.Pad(pad, fill=0),
                v2.RandomCrop(size),
                *to_float,
                *normalise,
                # value 0 after normalisation paints the ImageNet mean colour
                v2.RandomErasing(p=erasing_p, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0),
            ]
        else:
            steps = [*to_tensor, v2.Resize(size, antialias=True), *to_float, *normalise]
    elif recipe == "dml":
        if train:
            steps = [
                *to_tensor,
                v2.RandomResizedCrop(crop_size, antialias=True),
                v2.RandomHorizontalFlip(p=flip_p),
                *to_float,
                *normalise,
            ]
        else:
            steps = [
                *to_tensor,
                v2.Resize(resize_size, antialias=True),
                v2.CenterCrop(crop_size),
                *to_float,
                *normalise,
            ]
    elif recipe == "none":
        steps = [*to_tensor, v2.Resize([height, width], antialias=True), *to_float]
    else:
        raise ValueError(f"unknown transform recipe {recipe!r}; choose one of {RECIPES}")
    return v2.Compose(steps)
