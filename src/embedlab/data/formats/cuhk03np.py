"""CUHK03-NP: the 767/700 split of CUHK03 released in the Market-1501 layout."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from embedlab.data.source import DataSource

from ._common import DatasetLayoutError, check_root, find_base
from .market1501 import read_market_layout

LAYOUT = """\
<root>/                       (or its parent holding cuhk03-np/)
├── detected/                 boxes from the person detector
│   ├── bounding_box_train/   0001_c1_1.png ...  -> split train
│   ├── query/                0003_c1_1.png ...  -> split query
│   └── bounding_box_test/    0003_c2_3.png ...  -> split gallery
└── labeled/                  hand-drawn boxes, same three folders
"""


def read_cuhk03np(
    root: str | Path, variant: Literal["detected", "labeled"] = "detected"
) -> pd.DataFrame:
    """Read CUHK03-NP (the "new protocol" of Zhong et al.).

    Layout::

        <root>/detected/{bounding_box_train,query,bounding_box_test}/*.png
        <root>/labeled/{bounding_box_train,query,bounding_box_test}/*.png

    ``variant`` picks ``detected`` (the harder, usual choice) or ``labeled``.
    Within it the folders map to train / query / gallery exactly as for
    Market-1501. Names look like ``0001_c1_1.png``: identity ``0001``, camera
    ``1`` or ``2`` (stored 0-based), image number. Returned paths start with
    the variant folder, e.g. ``detected/query/0003_c1_1.png``.
    """
    if variant not in ("detected", "labeled"):
        raise ValueError(f"cuhk03np: variant must be 'detected' or 'labeled', not {variant!r}")
    root_path = check_root("cuhk03np", root, LAYOUT)
    base = find_base(root_path, variant, ("cuhk03-np", "CUHK03-NP"))
    if base is None:
        raise DatasetLayoutError("cuhk03np", root_path / variant, LAYOUT)
    frame = read_market_layout("cuhk03np", base / variant, LAYOUT)
    prefix = (base / variant).relative_to(root_path).as_posix()
    frame["path"] = prefix + "/" + frame["path"]
    return frame


class CUHK03NP(DataSource):
    """CUHK03 with the new protocol (767 / 700 identities).

    Args:
        variant: the ``detected`` or the hand-``labeled`` boxes.

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/cuhk03np``.
    """

    folder = "cuhk03np"

    def __init__(
        self, root: str | Path | None = None, variant: Literal["detected", "labeled"] = "detected"
    ) -> None:
        super().__init__(root)
        self.variant: Literal["detected", "labeled"] = variant

    def frame(self) -> pd.DataFrame:
        return read_cuhk03np(self.root, variant=self.variant)
