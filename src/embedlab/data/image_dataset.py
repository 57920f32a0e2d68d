"""One image dataset for every on-disk format (see :mod:`embedlab.data.formats`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from embedlab.errors import ConfigError

BadData = Literal["error", "skip"]


class BadImageError(ConfigError, OSError):
    """An image file is missing, empty, truncated or not an image."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __str__(self) -> str:
        return str(self.args[0])


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16- and 32-bit integer images are scaled down to 8 bits (a 16-bit image
    whose values stay at or below 255 is taken as already 8-bit); float
    images in [0, 1] are stretched to [0, 255]. Alpha is dropped, as
    torchvision's default loader does; palette images with transparency go
    through RGBA first so Pillow does not warn.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and array.size and np.nanmax(array) <= 1.0:
            array = array * 255.0
        elif array.size and np.nanmax(array) > 255.0:
            array = array / 257.0  # 65535 -> 255
        array = np.nan_to_num(np.clip(np.rint(array), 0, 255)).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` fully and return it as RGB, or raise :class:`BadImageError` saying why."""
    file = Path(path)
    if not file.is_file():
        raise BadImageError(file, "file not found")
    if file.stat().st_size == 0:
        raise BadImageError(file, "file is empty (0 bytes)")
    try:
        with Image.open(file) as image:
            image.load()  # decode now so truncation is caught here, not in a transform
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(file, f"{type(exc).__name__}: {exc}") from exc


def unreadable_reasons(paths: Sequence[str | Path | None], workers: int = 4) -> list[str | None]:
    """Decode each file once, ``workers`` at a time: why it cannot be read, or ``None`` when
    it can (and for a ``None`` entry, which is not scanned). The one image scan of embedlab:
    ``embedlab data check`` and the data module's ``bad_data: skip`` use it."""

    def reason(path: str | Path | None) -> str | None:
        if path is None:
            return None
        try:
            load_image(path)
        except BadImageError as err:
            return err.reason
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(reason, paths))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return F.to_dtype(F.to_image(image), torch.float32, scale=True).as_subclass(torch.Tensor)


class ImageDataset(Dataset[tuple[Any, int, int, int]]):
    """Images listed in a table with ``path``, ``label`` and ``camera`` columns.

    Item ``i`` is ``(image, label, camera, i)``: the image after ``transform``
    (a float tensor in [0, 1], shape ``(3, H, W)``, when there is no
    transform), and ``i`` the position in this dataset, so evaluation code can
    put features back in order. ``labels`` and ``cameras`` are int64 arrays
    aligned with the positions (P x K samplers read ``labels``).

    ``bad_data`` decides what an unreadable file does:

    * ``"error"`` (default): raise :class:`BadImageError` naming the file and
      the reason;
    * ``"skip"``: warn once, record ``(path, reason)`` in :attr:`skipped`, and
      return a substitute so the batch still fills: the next readable image
      (in dataset order, wrapping around) with the same label, or failing
      that the next readable image of any label. The substitute's own label,
      camera and index are returned so the tuple stays consistent; an index
      may therefore appear twice in an epoch. With several DataLoader workers
      each worker keeps its own :attr:`skipped`; run ``embedlab data check``
      to list every bad file up front.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        root: str | Path,
        transform: Callable[[Image.Image], Any] | None = None,
        bad_data: BadData = "error",
    ) -> None:
        missing = [c for c in ("path", "label", "camera") if c not in frame.columns]
        if missing:
            raise ValueError(f"ImageDataset: frame lacks column(s) {missing}")
        if bad_data not in ("error", "skip"):
            raise ValueError(f"ImageDataset: bad_data must be 'error' or 'skip', not {bad_data!r}")
        self.frame = frame.reset_index(drop=True)
        self.root = Path(root)
        self.transform = transform
        self.bad_data: BadData = bad_data
        self.paths: list[str] = [str(p) for p in self.frame["path"]]
        self.labels: np.ndarray = self.frame["label"].to_numpy(dtype=np.int64)
        self.cameras: np.ndarray = self.frame["camera"].to_numpy(dtype=np.int64)
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()
        self._by_label: dict[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        """Full path of item ``index``."""
        return self.root / self.paths[index]

    def __getitem__(self, index: int) -> tuple[Any, int, int, int]:
        index = int(index)  # samplers may hand numpy or tensor integers
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        if self.bad_data == "error":
            image = load_image(self.path(index))
        else:
            index, image = self._load_or_substitute(index)
        output = self.transform(image) if self.transform is not None else _to_tensor(image)
        return output, int(self.labels[index]), int(self.cameras[index]), index

    # -- skipping -----------------------------------------------------------

    def _try(self, index: int) -> Image.Image | None:
        if index in self._bad:
            return None
        try:
            return load_image(self.path(index))
        except BadImageError as exc:
            self._bad.add(index)
            self.skipped.append((self.paths[index], exc.reason))
            warnings.warn(
                f"{exc}; using another image instead (bad_data='skip')",
                RuntimeWarning,
                stacklevel=4,
            )
            return None

    def _candidates(self, index: int) -> Iterator[int]:
        """Positions to try in place of ``index``: same label first, then any, both wrapping."""
        if self._by_label is None:
            order = np.argsort(self.labels, kind="stable")
            labels, starts = np.unique(self.labels[order], return_index=True)
            groups = np.split(order, starts[1:])
            self._by_label = {
                int(label): group for label, group in zip(labels, groups, strict=True)
            }
        same = self._by_label[int(self.labels[index])]
        cut = int(np.searchsorted(same, index, side="right"))
        for position in (*same[cut:], *same[:cut]):
            if int(position) != index:
                yield int(position)
        label = self.labels[index]
        n = len(self)
        for step in range(1, n):
            position = (index + step) % n
            if self.labels[position] != label:
                yield position

    def _load_or_substitute(self, index: int) -> tuple[int, Image.Image]:
        image = self._try(index)
        if image is not None:
            return index, image
        for candidate in self._candidates(index):
            image = self._try(candidate)
            if image is not None:
                return candidate, image
        raise BadImageError(
            self.path(index), "no readable image left in the dataset to use instead"
        )
