"""Market-1501 and the folder layout that DukeMTMC-reID and CUHK03-NP share with it."""

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
    list_images,
    parse_reid_name,
    rel,
)

LAYOUT = """\
<root>/                       (or its parent holding Market-1501-v15.09.15/)
├── bounding_box_train/       0002_c1s1_000451_03.jpg ...  -> split train
├── query/                    0001_c1s1_001051_00.jpg ...  -> split query
└── bounding_box_test/        0001_c1s1_000151_01.jpg ...  -> split gallery
                              (-1_c1s1_... junk, 0000_c1s1_... distractors)
"""

# (folder, split) in the order the table lists them.
REID_FOLDERS: tuple[tuple[str, str], ...] = (
    ("bounding_box_train", "train"),
    ("query", "query"),
    ("bounding_box_test", "gallery"),
)


def read_market_layout(
    dataset: str,
    root: str | Path,
    layout: str,
    subdirs: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Scan ``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` under ``root``.

    Identity and camera come from the leading ``<pid>_c<camera>`` of each file
    name. Junk (pid -1) is dropped from train and query and kept in the gallery
    with label -1; distractors (pid 0) are dropped from train and kept
    elsewhere, where they act as negatives. Cameras become 0-based.
    """
    root_path = check_root(dataset, root, layout)
    base = find_base(root_path, "bounding_box_train", subdirs) or root_path
    rows = FrameBuilder()
    for folder, split in REID_FOLDERS:
        directory = base / folder
        if not directory.is_dir():
            raise DatasetLayoutError(dataset, directory, layout)
        for name in list_images(directory):
            pid, cam = parse_reid_name(name, directory / name)
            if pid < -1:
                raise DatasetFormatError(
                    directory / name, f"identity {pid} is negative but not -1 (junk)"
                )
            if pid == -1 and split != "gallery":
                continue
            if pid == 0 and split == "train":
                continue
            rows.add(rel(base, root_path, folder, name), pid, cam - 1, split)
    return rows.frame()


def read_market1501(root: str | Path) -> pd.DataFrame:
    """Read Market-1501 as released (``Market-1501-v15.09.15``).

    Layout::

        <root>/bounding_box_train/   12,936 training images  -> train
        <root>/query/                 3,368 query images      -> query
        <root>/bounding_box_test/    19,732 gallery images    -> gallery

    Names look like ``0002_c1s1_000451_03.jpg``: identity ``0002``, camera
    ``1`` (of 6, stored 0-based). Identity ``-1`` marks junk boxes: dropped
    from train, kept in the gallery with label -1 so the protocol can ignore
    them. Identity ``0000`` marks distractors: kept in the gallery as
    negatives. ``root`` may also be the folder that contains
    ``Market-1501-v15.09.15/``.
    """
    return read_market_layout(
        "market1501", root, LAYOUT, subdirs=("Market-1501-v15.09.15", "Market-1501", "market1501")
    )


class Market1501(DataSource):
    """Market-1501 (Zheng et al. 2015): ``bounding_box_train``, ``query``, ``bounding_box_test``.

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/market1501``.
    """

    folder = "market1501"

    def frame(self) -> pd.DataFrame:
        return read_market1501(self.root)
