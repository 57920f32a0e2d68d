"""Stanford Online Products (SOP)."""

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
<root>/                       (or its parent holding Stanford_Online_Products/)
├── bicycle_final/ ... toaster_final/   111085122871_0.JPG ...
├── Ebay_train.txt            header 'image_id class_id super_class_id path' -> split train
└── Ebay_test.txt             same header                                    -> split test
classes 1-11318 train, 11319-22634 test (leave-one-out)
"""

HEADER = ["image_id", "class_id", "super_class_id", "path"]


def _read_ebay_list(file: Path) -> list[tuple[str, int]]:
    lines = iter_lines(file)
    first = next(lines, None)
    if first is None or first[1].split() != HEADER:
        raise DatasetFormatError(
            file, f"first line must be the header {' '.join(HEADER)!r}", first[0] if first else 1
        )
    entries = []
    for number, text in lines:
        fields = text.split(maxsplit=3)
        if len(fields) != 4:
            raise DatasetFormatError(
                file, f"expected 'image_id class_id super_class_id path', got {text!r}", number
            )
        parse_int(fields[0], file, number, "image_id")
        label = parse_int(fields[1], file, number, "class_id")
        parse_int(fields[2], file, number, "super_class_id")
        entries.append((fields[3], label))
    return entries


def read_sop(root: str | Path) -> pd.DataFrame:
    """Read Stanford Online Products (120,053 images of 22,634 products).

    Layout::

        <root>/Ebay_train.txt   'image_id class_id super_class_id path'  -> train
        <root>/Ebay_test.txt    same columns                             -> test
        <root>/<super class>_final/<name>.JPG

    The files list 59,551 train images of classes 1-11318 and 60,502 test
    images of classes 11319-22634; test uses leave-one-out retrieval. Labels
    are ``class_id``; no cameras (-1). ``root`` may also be the folder holding
    ``Stanford_Online_Products/``.
    """
    root_path = check_root("sop", root, LAYOUT)
    base = find_base(root_path, "Ebay_train.txt", ("Stanford_Online_Products",)) or root_path
    rows = FrameBuilder()
    for list_name, split in (("Ebay_train.txt", "train"), ("Ebay_test.txt", "test")):
        list_file = base / list_name
        if not list_file.is_file():
            raise DatasetLayoutError("sop", list_file, LAYOUT)
        for path, label in _read_ebay_list(list_file):
            rows.add(rel(base, root_path, path), label, -1, split)
    return rows.frame()


class SOP(DataSource):
    """Stanford Online Products (``Ebay_train.txt`` / ``Ebay_test.txt``), leave-one-out test.

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/sop``.
    """

    folder = "sop"

    def frame(self) -> pd.DataFrame:
        return read_sop(self.root)
