"""An ImageFolder-style tree: one folder per split, one sub-folder per class."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from embedlab.data.source import DataSource

from ._common import SPLITS, DatasetLayoutError, FrameBuilder, check_root, list_images

LAYOUT = """\
<root>/
├── train/<class>/<image>     -> split train
├── query/<class>/<image>     -> split query     } for ReID-style evaluation
├── gallery/<class>/<image>   -> split gallery   }
└── test/<class>/<image>      -> split test (leave-one-out)
at least one split folder; class folders named by integers (e.g. 0001) keep those
numbers as labels, otherwise the sorted names are numbered 0, 1, 2, ...
"""


def read_imagefolder(root: str | Path) -> pd.DataFrame:
    """Read a tree of ``<root>/<split>/<class>/<image>`` folders.

    Any of the split folders ``train``, ``query``, ``gallery`` and ``test``
    may be present (at least one). Class folders with the same name in
    different splits are the same identity. When every class folder name is an
    integer (``0001``, ``42``) that integer is the label; otherwise the sorted
    set of names across all splits is numbered from 0. No cameras (-1). Files
    other than images are ignored; images directly in a split folder are not
    read.
    """
    root_path = check_root("imagefolder", root, LAYOUT)
    present = [split for split in SPLITS if (root_path / split).is_dir()]
    if not present:
        raise DatasetLayoutError(
            "imagefolder", root_path / "train", LAYOUT, hint="No train/query/gallery/test folder."
        )
    classes: dict[str, list[str]] = {}
    for split in present:
        with os.scandir(root_path / split) as entries:
            classes[split] = sorted(entry.name for entry in entries if entry.is_dir())
    names = sorted({name for found in classes.values() for name in found})
    if all(name.isdigit() for name in names) and len({int(n) for n in names}) == len(names):
        label_of = {name: int(name) for name in names}
    else:
        label_of = {name: index for index, name in enumerate(names)}
    rows = FrameBuilder()
    for split in present:
        for name in classes[split]:
            for image in list_images(root_path / split / name):
                rows.add(f"{split}/{name}/{image}", label_of[name], -1, split)
    return rows.frame()


class ImageFolder(DataSource):
    """A ``<root>/<split>/<class>/<image>`` tree (see :func:`read_imagefolder`).

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/imagefolder``.
    """

    folder = "imagefolder"

    def frame(self) -> pd.DataFrame:
        return read_imagefolder(self.root)
