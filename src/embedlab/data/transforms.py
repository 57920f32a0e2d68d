"""Image transforms: a pair of callables, one for training and one for evaluation.

``data.transforms`` is a :class:`Transforms` chosen by ``class_path``. The presets:

* :class:`ReIDTransforms`: the Bag-of-Tricks baseline. Train: resize to 256x128, flip with
  p=0.5, pad 10 pixels and take a random 256x128 crop, normalise with the ImageNet
  statistics, random erasing with p=0.5. Eval: resize and normalise.
* :class:`DMLTransforms`: the usual metric-learning recipe. Train: random resized crop to
  224 (227 for some GoogLeNet/BN-Inception setups) and flip. Eval: resize the shorter side
  to 256 and take the centre 224 crop. Both normalise.
* :class:`PlainTransforms`: no augmentation and no normalisation: resize to
  ``height x width`` and scale to [0, 1], for inspection and quick tests.
* :class:`DigitsTransforms`: grey 8x8 images scaled to [-1, 1]; training shifts by up to one
  pixel. The default of :class:`~embedlab.data.Digits`, so a digits model embeds PNG files.

Any other pair is ``Transforms(train=..., eval=...)`` with two callables by ``class_path``
(e.g. ``torchvision.transforms.v2.Compose``), or a subclass. Each callable takes a PIL image
(or a uint8 tensor) and returns a float tensor ``(3, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from embedlab.options import IMAGENET_MEAN, IMAGENET_STD

Transform = Callable[[Any], Any]


class Transforms:
    """The training and the evaluation transform of image datasets.

    Args:
        train: applied to training images (augmentation).
        eval: applied to validation and test images.
    """

    def __init__(self, train: Transform, eval: Transform) -> None:
        self.train = train
        self.eval = eval

    def __repr__(self) -> str:
        return f"{type(self).__name__}(train={self.train!r}, eval={self.eval!r})"


def _ends(
    mean: Sequence[float], std: Sequence[float]
) -> tuple[list[v2.Transform], list[v2.Transform]]:
    """The first step (to an image tensor) and the last ones (to float, normalised)."""
    return [v2.ToImage()], [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]


class ReIDTransforms(Transforms):
    """Person re-identification (Bag of Tricks, Luo et al. 2019).

    Args:
        height: image height.
        width: image width.
        flip_p: probability of the horizontal flip.
        pad: padding before the random crop back to ``height x width``.
        erasing_p: probability of random erasing (after normalisation, with the mean colour).
        mean: normalisation mean.
        std: normalisation standard deviation.
    """

    def __init__(
        self,
        height: int = 256,
        width: int = 128,
        flip_p: float = 0.5,
        pad: int = 10,
        erasing_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        start, end = _ends(mean, std)
        size = [height, width]
        train = [
            *start,
            v2.Resize(size, antialias=True),
            v2.RandomHorizontalFlip(p=flip_p),
            v2.Pad(pad, fill=0),
            v2.RandomCrop(size),
            *end,
            # value 0 after normalisation paints the ImageNet mean colour
            v2.RandomErasing(p=erasing_p, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0),
        ]
        evaluation = [*start, v2.Resize(size, antialias=True), *end]
        super().__init__(v2.Compose(train), v2.Compose(evaluation))


class DMLTransforms(Transforms):
    """Deep metric learning (CUB-200, Cars196, SOP, In-Shop).

    Args:
        crop_size: side of the square crop (224, or 227 for some GoogLeNet setups).
        resize_size: evaluation: the shorter side is resized to this before the centre crop.
        flip_p: probability of the horizontal flip.
        mean: normalisation mean.
        std: normalisation standard deviation.
    """

    def __init__(
        self,
        crop_size: int = 224,
        resize_size: int = 256,
        flip_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        start, end = _ends(mean, std)
        train = [
            *start,
            v2.RandomResizedCrop(crop_size, antialias=True),
            v2.RandomHorizontalFlip(p=flip_p),
            *end,
        ]
        evaluation = [
            *start,
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(crop_size),
            *end,
        ]
        super().__init__(v2.Compose(train), v2.Compose(evaluation))


class PlainTransforms(Transforms):
    """Resize to ``height x width`` and scale to [0, 1], in training as in evaluation.

    Args:
        height: image height.
        width: image width.
    """

    def __init__(self, height: int = 256, width: int = 128) -> None:
        steps = [
            v2.ToImage(),
            v2.Resize([height, width], antialias=True),
            v2.ToDtype(torch.float32, scale=True),
        ]
        super().__init__(v2.Compose(steps), v2.Compose(steps))


class DigitsTransforms(Transforms):
    """Small grey images (scikit-learn's 8x8 digits): grey, resize, scale to [-1, 1].

    Training shifts the image by up to ``shift`` pixels (a random crop of the black-padded
    image). Colour files are converted to grey first, so a PNG of a digit embeds exactly as
    the same digit in memory.

    Args:
        size: side of the square image.
        shift: largest training shift in pixels (0: no augmentation).
    """

    def __init__(self, size: int = 8, shift: int = 1) -> None:
        # Grayscale first: on a PIL image it is PIL's exact conversion, on a 1-channel tensor a no-op
        start = [v2.Grayscale(1), v2.ToImage(), v2.Resize([size, size], antialias=True)]
        end = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]
        crop = [v2.RandomCrop(size, padding=shift, fill=0)] if shift else []
        super().__init__(v2.Compose([*start, *crop, *end]), v2.Compose([*start, *end]))
