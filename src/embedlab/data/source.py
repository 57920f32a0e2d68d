"""What a dataset is to embedlab: a table of images (``frame()``) and a way to load them.

A dataset is any object with ``frame() -> pandas.DataFrame`` (:class:`FrameSource`). The
frame has one row per image and the columns

* ``path``: the image file, absolute or relative to the dataset's ``root`` attribute;
* ``label``: integer identity or class, ``-1`` for junk (kept in the gallery so the
  evaluation protocol can ignore it);
* ``camera``: 0-based camera index, ``-1`` where the dataset has none;
* ``split``: ``train``, ``query``, ``gallery``, or ``test`` (leave-one-out: every test
  image is both a query and a gallery item);

and may carry more (e.g. ``tracklet`` for video datasets). Optional attributes a dataset may
define: ``root`` (where relative paths start; default the working directory), ``name`` (for
messages and per-dataset metrics), ``image_disjoint`` (validation holds out images rather than
classes), ``val_style`` (how held-out images become val queries and gallery items, see
:func:`embedlab.data.splits.val_roles`), ``on_disk`` (``False`` for in-memory data: nothing to scan for unreadable files) and
``images(rows, train, transforms, bad_data)`` returning the torch dataset of those rows (default:
read the files with :class:`~embedlab.data.ImageDataset` and ``transforms.train`` or ``.eval``).

:class:`DataSource` is the base of embedlab's own datasets (``embedlab.data.Market1501``,
``Digits``, ``Table``, …): it resolves ``root`` (default ``$EMBEDLAB_DATA_ROOT/<folder>``), so
subclasses only write ``frame()``. In a configuration, pick one by ``class_path``::

    data:
      dataset:
        class_path: embedlab.data.Market1501
        init_args: {root: /data/Market-1501-v15.09.15}
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import pandas as pd
from torch.utils.data import Dataset

from embedlab.data.image_dataset import BadData, ImageDataset
from embedlab.data.transforms import ReIDTransforms, Transforms


@runtime_checkable
class FrameSource(Protocol):
    """Anything with ``frame()``: the one method a dataset must have."""

    def frame(self) -> pd.DataFrame: ...


class DataSource:
    """Base class of embedlab's datasets: ``root`` handling and file-based image loading.

    Args:
        root: the dataset folder; default ``$EMBEDLAB_DATA_ROOT/<folder>`` (``data/<folder>``
            when the variable is unset), ``folder`` being the class's default folder name.
    """

    folder: ClassVar[str] = ""
    image_disjoint: bool = False
    val_style: str | None = None
    on_disk: bool = True

    def __init__(self, root: str | Path | None = None) -> None:
        self._root = None if root is None else Path(root).expanduser()

    @property
    def name(self) -> str:
        """Short name, used in messages and as ``val/<name>/<metric>`` for unions."""
        return self.folder or re.sub(r"[^a-z0-9]+", "", type(self).__name__.lower())

    @property
    def root(self) -> Path:
        if self._root is not None:
            return self._root
        return Path(os.environ.get("EMBEDLAB_DATA_ROOT", "data")) / self.name

    def frame(self) -> pd.DataFrame:
        """One row per image: ``path, label, camera, split`` (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must define frame()")

    def images(
        self, rows: pd.DataFrame, train: bool, transforms: Transforms, bad_data: BadData
    ) -> Dataset[Any]:
        """The torch dataset serving ``rows`` (a slice of :meth:`frame`) for training or not."""
        transform = transforms.train if train else transforms.eval
        return ImageDataset(rows.reset_index(drop=True), self.root, transform, bad_data)

    def default_transforms(self) -> Transforms:
        """The transforms used when ``data.transforms`` is not given (Bag-of-Tricks ReID)."""
        return ReIDTransforms()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"


def source_name(source: FrameSource) -> str:
    """``source.name`` or its class name in lower case."""
    name = getattr(source, "name", None)
    return str(name) if name else type(source).__name__.lower()


def source_root(source: FrameSource) -> Path:
    """``source.root``, or the working directory for a dataset without one."""
    root = getattr(source, "root", None)
    return Path(root) if root is not None else Path.cwd()


def source_images(
    source: FrameSource, rows: pd.DataFrame, train: bool, transforms: Transforms, bad_data: BadData
) -> Dataset[Any]:
    """``source.images(...)`` when it has one, else :class:`ImageDataset` over the files."""
    images = getattr(source, "images", None)
    if callable(images):
        return images(rows, train, transforms, bad_data)  # type: ignore[no-any-return]
    transform = transforms.train if train else transforms.eval
    return ImageDataset(rows.reset_index(drop=True), source_root(source), transform, bad_data)
