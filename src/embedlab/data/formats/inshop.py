"""DeepFashion In-Shop Clothes Retrieval."""

from __future__ import annotations

import re
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
<root>/
├── img/                      WOMEN/Dresses/id_00000002/02_1_front.jpg ...
│                             (or Img/img/... as in the DeepFashion download)
└── list_eval_partition.txt   (or Eval/list_eval_partition.txt)
        line 1: number of images
        line 2: 'image_name item_id evaluation_status'
        then:   'img/WOMEN/.../02_1_front.jpg  id_00000002  train|query|gallery'
"""

HEADER = ["image_name", "item_id", "evaluation_status"]
STATUSES = ("train", "query", "gallery")
_ITEM = re.compile(r"^id_(\d+)$")


def read_inshop(root: str | Path) -> pd.DataFrame:
    """Read In-Shop Clothes Retrieval (52,712 images of 7,982 items).

    Layout::

        <root>/list_eval_partition.txt      (or <root>/Eval/list_eval_partition.txt)
        <root>/img/<gender>/<category>/id_XXXXXXXX/<name>.jpg   (or <root>/Img/img/...)

    The partition file starts with the image count and the header
    ``image_name item_id evaluation_status``; each row names an image, its item
    (``id_00000002`` becomes label 2) and its split: 25,882 ``train`` images of
    3,997 items, 14,218 ``query`` and 12,612 ``gallery`` images of the other
    3,985 items. No cameras (-1).
    """
    root_path = check_root("inshop", root, LAYOUT)
    base = find_base(root_path, "list_eval_partition.txt", ("Eval",))
    if base is None:
        raise DatasetLayoutError("inshop", root_path / "list_eval_partition.txt", LAYOUT)
    list_file = base / "list_eval_partition.txt"
    # Image paths in the file start with 'img/'; find the folder that holds it.
    image_base = find_base(root_path, "img", ("Img", "In-shop", "inshop"))
    if image_base is None:
        raise DatasetLayoutError("inshop", root_path / "img", LAYOUT)

    lines = iter_lines(list_file)
    first = next(lines, None)
    if first is None:
        raise DatasetFormatError(list_file, "is empty", 1)
    expected = parse_int(first[1], list_file, first[0], "image count")
    second = next(lines, None)
    if second is None or second[1].split() != HEADER:
        raise DatasetFormatError(
            list_file,
            f"expected the header {' '.join(HEADER)!r}",
            second[0] if second else first[0] + 1,
        )
    rows = FrameBuilder()
    for number, text in lines:
        fields = text.split()
        if len(fields) != 3:
            raise DatasetFormatError(
                list_file, f"expected 'image_name item_id evaluation_status', got {text!r}", number
            )
        name, item, status = fields
        match = _ITEM.match(item)
        if match is None:
            raise DatasetFormatError(
                list_file, f"item id {item!r} is not of the form id_00000002", number
            )
        if status not in STATUSES:
            raise DatasetFormatError(
                list_file, f"evaluation_status {status!r} is not one of {STATUSES}", number
            )
        rows.add(rel(image_base, root_path, name), int(match.group(1)), -1, status)
    if len(rows.paths) != expected:
        raise DatasetFormatError(
            list_file, f"line 1 announces {expected} images but {len(rows.paths)} are listed", 1
        )
    return rows.frame()


class InShop(DataSource):
    """DeepFashion In-shop Clothes Retrieval (``list_eval_partition.txt``): query / gallery.

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/inshop``.
    """

    folder = "inshop"

    def frame(self) -> pd.DataFrame:
        return read_inshop(self.root)
