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
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import Dataset

from embedlab.data.image_dataset import BadData
from embedlab.data.source import DataSource
from embedlab.data.transforms import Transforms

Protocol = Literal["image_disjoint", "class_disjoint"]


def digits_frame(protocol: Protocol = "image_disjoint", seed: int = 0) -> pd.DataFrame:
    """One row per image: ``path`` (``digits/<n>``), ``label``, ``camera`` (−1), ``split``."""
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
    """Yields ``(image [1, 8, 8] in [-1, 1], label, camera, index)``.

    ``augment`` applies a random shift of up to one pixel (zero padding), a light augmentation
    that suits 8×8 digits.
    """

    def __init__(self, frame: pd.DataFrame, augment: bool = False) -> None:
        images = load_digits().images.astype(np.float32) / 16.0
        ids = frame["path"].str.removeprefix("digits/").astype(int).to_numpy()
        self.images = torch.from_numpy(images[ids] * 2.0 - 1.0).unsqueeze(1)
        self.paths: list[str] = [str(p) for p in frame["path"]]
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        self.cameras = frame["camera"].to_numpy(dtype=np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, int]:
        image = self.images[index]
        if self.augment:
            padded = torch.nn.functional.pad(image, (1, 1, 1, 1), value=-1.0)
            dy, dx = torch.randint(0, 3, (2,)).tolist()
            image = padded[:, dy : dy + 8, dx : dx + 8]
        return image, int(self.labels[index]), int(self.cameras[index]), index

    def raw_pixels(self) -> Tensor:
        """Flattened pixels, the baseline every trained model must beat."""
        return self.images.flatten(1)


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
        """8×8 tensors with a one-pixel random shift in training; ``transforms`` do not apply."""
        return DigitsDataset(rows.reset_index(drop=True), augment=train)

    def __repr__(self) -> str:
        return f"Digits(protocol={self.protocol!r}, seed={self.seed})"
