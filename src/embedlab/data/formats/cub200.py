"""CUB-200-2011 with the class-disjoint split used in deep metric learning."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from embedlab.data.source import DataSource

from ._common import (
    DatasetFormatError,
    DatasetLayoutError,
    FrameBuilder,
    check_root,
    find_base,
    iter_lines,
    parse_int,
    rel,
)

LAYOUT = """\
<root>/                       (or its parent holding CUB_200_2011/)
├── images/
│   └── 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...
├── images.txt                '<image_id> <path under images/>'
└── image_class_labels.txt    '<image_id> <class_id 1..200>'
split: classes 1-100 -> train, classes 101-200 -> test (leave-one-out)
"""


def _read_pairs(file: Path, what: str) -> dict[int, tuple[int, str]]:
    """Map image id -> (line number, rest of line) for ``'<image_id> <value>'`` files."""
    pairs: dict[int, tuple[int, str]] = {}
    for number, text in iter_lines(file):
        fields = text.split(maxsplit=1)
        if len(fields) != 2:
            raise DatasetFormatError(file, f"expected '<image_id> <{what}>', got {text!r}", number)
        image_id = parse_int(fields[0], file, number, "image id")
        if image_id in pairs:
            raise DatasetFormatError(file, f"image id {image_id} appears twice", number)
        pairs[image_id] = (number, fields[1].strip())
    return pairs


def read_cub200(root: str | Path, train_classes: int = 100) -> pd.DataFrame:
    """Read CUB-200-2011 (11,788 images of 200 bird species).

    Layout::

        <root>/images.txt               '<image_id> <path under images/>'
        <root>/image_class_labels.txt   '<image_id> <class_id>'
        <root>/images/<class folder>/<name>.jpg

    The metric-learning convention is used, not the classification split in
    ``train_test_split.txt``: classes ``1..train_classes`` (1-100) are train,
    the rest (101-200) are ``test``, where every image is in turn a query
    against all the others. Labels are the class ids (1-based); there is no
    camera (-1). ``root`` may also be the folder holding ``CUB_200_2011/``.
    """
    root_path = check_root("cub200", root, LAYOUT)
    base = find_base(root_path, "images.txt", ("CUB_200_2011",)) or root_path
    for needed in ("images.txt", "image_class_labels.txt", "images"):
        if not (base / needed).exists():
            raise DatasetLayoutError("cub200", base / needed, LAYOUT)
    images = _read_pairs(base / "images.txt", "path")
    labels_file = base / "image_class_labels.txt"
    labels = _read_pairs(labels_file, "class_id")
    rows = FrameBuilder()
    for image_id, (_, path) in images.items():
        if image_id not in labels:
            raise DatasetFormatError(labels_file, f"no class for image id {image_id} ({path})")
        line, label_text = labels[image_id]
        label = parse_int(label_text, labels_file, line, "class id")
        split = "train" if label <= train_classes else "test"
        rows.add(rel(base, root_path, "images", path), label, -1, split)
    extra = sorted(set(labels) - set(images))
    if extra:
        raise DatasetFormatError(
            labels_file, f"image ids {extra[:5]} have a class but are not in images.txt"
        )
    return rows.frame()


class CUB200(DataSource):
    """CUB-200-2011: the first ``train_classes`` classes train, the rest are the leave-one-out test.

    Args:
        train_classes: number of training classes (100 in the DML papers).

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/cub200``.
    """

    folder = "cub200"

    def __init__(self, root: str | Path | None = None, train_classes: int = 100) -> None:
        super().__init__(root)
        self.train_classes = train_classes

    def frame(self) -> pd.DataFrame:
        return read_cub200(self.root, train_classes=self.train_classes)
