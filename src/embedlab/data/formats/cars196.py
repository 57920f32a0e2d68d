"""Stanford Cars (Cars196) with the class-disjoint split used in deep metric learning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedlab.data.source import DataSource

from ._common import (
    DatasetFormatError,
    DatasetLayoutError,
    FrameBuilder,
    check_root,
    find_base,
    rel,
)

LAYOUT = """\
<root>/
├── car_ims/                  000001.jpg ... 016185.jpg
└── cars_annos.mat            struct array 'annotations' with fields
                              relative_im_path ('car_ims/000001.jpg'), bbox_x1, bbox_y1,
                              bbox_x2, bbox_y2, class (1..196), test
split: classes 1-98 -> train, classes 99-196 -> test (leave-one-out)
"""

_NEEDED_FIELDS = ("relative_im_path", "class")


def _scalar(value: Any) -> Any:
    """First element of the nested arrays scipy returns for a MATLAB struct field."""
    array = np.asarray(value)
    while array.dtype == object and array.size == 1:
        array = np.asarray(array.ravel()[0])
    if array.size != 1:
        raise ValueError(f"expected a single value, got an array of shape {array.shape}")
    return array.ravel()[0]


def read_cars196(root: str | Path, train_classes: int = 98) -> pd.DataFrame:
    """Read Cars196 (16,185 images of 196 car models) from ``cars_annos.mat``.

    Layout::

        <root>/cars_annos.mat   MATLAB struct array 'annotations', one entry per image
        <root>/car_ims/000001.jpg ...

    Each entry's ``relative_im_path`` (e.g. ``car_ims/000001.jpg``) is the
    image and ``class`` (1..196) its label; the ``test`` flag of the
    classification split is ignored. Classes ``1..train_classes`` (1-98) are
    train, the rest (99-196) are ``test`` with leave-one-out retrieval. No
    cameras (-1).
    """
    from scipy.io import loadmat

    root_path = check_root("cars196", root, LAYOUT)
    base = find_base(root_path, "cars_annos.mat", ("cars196", "stanford_cars", "Cars196"))
    if base is None:
        raise DatasetLayoutError("cars196", root_path / "cars_annos.mat", LAYOUT)
    mat_file = base / "cars_annos.mat"
    try:
        mat = loadmat(mat_file)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DatasetFormatError(mat_file, f"cannot be read as a MATLAB file ({exc})") from exc
    if "annotations" not in mat:
        raise DatasetFormatError(mat_file, "has no 'annotations' variable")
    annotations = np.asarray(mat["annotations"])
    names = annotations.dtype.names or ()
    missing = [field for field in _NEEDED_FIELDS if field not in names]
    if missing:
        raise DatasetFormatError(
            mat_file, f"'annotations' lacks the field(s) {missing}; it has {list(names)}"
        )
    rows = FrameBuilder()
    for index, entry in enumerate(annotations.ravel()):
        try:
            path = str(_scalar(entry["relative_im_path"]))
            label = int(_scalar(entry["class"]))
        except (ValueError, TypeError, IndexError) as exc:
            raise DatasetFormatError(
                mat_file, f"annotation {index + 1} (1-based) is malformed: {exc}"
            ) from exc
        split = "train" if label <= train_classes else "test"
        rows.add(rel(base, root_path, path), label, -1, split)
    folders = {Path(p).parent for p in rows.paths}
    for folder in sorted(folders):
        if not (root_path / folder).is_dir():
            raise DatasetLayoutError("cars196", root_path / folder, LAYOUT)
    return rows.frame()


class Cars196(DataSource):
    """Stanford Cars: the first ``train_classes`` classes train, the rest are the leave-one-out test.

    Args:
        train_classes: number of training classes (98 in the DML papers).

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/cars196``.
    """

    folder = "cars196"

    def __init__(self, root: str | Path | None = None, train_classes: int = 98) -> None:
        super().__init__(root)
        self.train_classes = train_classes

    def frame(self) -> pd.DataFrame:
        return read_cars196(self.root, train_classes=self.train_classes)
