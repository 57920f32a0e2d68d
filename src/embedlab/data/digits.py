"""scikit-learn's bundled handwritten digits (1,797 real 8×8 images, 10 classes) as a dataset.

Two protocols, both seeded and image-disjoint:
- ``image_disjoint``: every class is split 60 / 40 into train and held-out; the held-out
  images are split 1/3 query, 2/3 gallery.
- ``class_disjoint``: digits 0–4 train, digits 5–9 held out (1/3 query, 2/3 gallery): the
  deep-metric-learning protocol where test classes are never seen in training.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from embedlab.data.image_dataset import BadData
from embedlab.data.source import DataSource
from embedlab.data.transforms import DigitsTransforms, Transform, Transforms

Protocol = Literal["image_disjoint", "class_disjoint"]


def digits_frame(protocol: Protocol = "image_disjoint", seed: int = 0) -> pd.DataFrame:
    """One row per image: ``path`` (``digits/<n>``), ``label``, ``camera`` (−1), ``split``."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if protocol == "class_disjoint":
            n_train = len(idx) if c < 5 else 0
        elif protocol == "image_disjoint":
            n_train = round(0.6 * len(idx))
        else:
            raise ValueError(f"unknown digits protocol {protocol!r}")
        held = idx[n_train:]
        n_query = len(held) // 3
        split[idx[:n_train]] = "train"
        split[held[:n_query]] = "query"
        split[held[n_query:]] = "gallery"
    return pd.DataFrame(
        {
            "path": [f"digits/{i}" for i in range(len(labels))],
            "label": labels.astype(int),
            "camera": -1,
            "split": split,
        }
    )


class DigitsDataset(Dataset[tuple[Tensor, int, int, int]]):
    """Yields ``(transform(image), label, camera, index)``; images are grey ``[1, 8, 8]`` uint8
    tensors (the 0–16 pixel values scaled to 0–255), as a PNG of the digit would load."""

    def __init__(self, frame: pd.DataFrame, transform: Transform) -> None:
        ids = frame["path"].str.removeprefix("digits/").astype(int).to_numpy()
        self.images = torch.from_numpy(digit_pixels()[ids]).unsqueeze(1)
        self.paths: list[str] = [str(p) for p in frame["path"]]
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        self.cameras = frame["camera"].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, int]:
        image = self.transform(self.images[index])
        return image, int(self.labels[index]), int(self.cameras[index]), index

    def raw_pixels(self) -> Tensor:
        """Flattened pixels in [-1, 1], the baseline every trained model must beat."""
        return self.images.flatten(1).float() / 127.5 - 1.0


def digit_pixels() -> np.ndarray:
    """The 1,797 digits as ``(n, 8, 8)`` uint8 grey images (0–16 scaled to 0–255)."""
    from sklearn.datasets import load_digits

    return np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)


class Digits(DataSource):
    """scikit-learn's digits, in memory: the bundled default dataset (no download).

    Args:
        protocol: ``image_disjoint`` (every class in train and test; the validation split holds
            out images) or ``class_disjoint`` (digits 0–4 train, 5–9 test).
        seed: the seed of the train / query / gallery split.
    """

    folder = "digits"
    on_disk = False

    def __init__(self, protocol: Protocol = "image_disjoint", seed: int = 0) -> None:
        super().__init__(None)
        self.protocol: Protocol = protocol
        self.seed = seed
        self.image_disjoint = protocol == "image_disjoint"

    def frame(self) -> pd.DataFrame:
        return digits_frame(self.protocol, self.seed)

    def images(
        self, rows: pd.DataFrame, train: bool, transforms: Transforms, bad_data: BadData
    ) -> DigitsDataset:
        """8×8 grey images through ``transforms`` (default :class:`DigitsTransforms`)."""
        return DigitsDataset(
            rows.reset_index(drop=True), transforms.train if train else transforms.eval
        )

    def default_transforms(self) -> Transforms:
        """Grey 8×8 images in [-1, 1], a one-pixel random shift in training."""
        return DigitsTransforms()

    def __repr__(self) -> str:
        return f"Digits(protocol={self.protocol!r}, seed={self.seed})"
