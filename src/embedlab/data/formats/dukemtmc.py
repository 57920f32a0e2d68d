"""DukeMTMC-reID: the Market-1501 folder layout with Duke's file names."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from embedlab.data.source import DataSource

from .market1501 import read_market_layout

LAYOUT = """\
<root>/                       (or its parent holding DukeMTMC-reID/)
├── bounding_box_train/       0001_c2_f0046182.jpg ...  -> split train
├── query/                    0005_c2_f0046985.jpg ...  -> split query
└── bounding_box_test/        0005_c5_f0051341.jpg ...  -> split gallery
"""


def read_dukemtmc(root: str | Path) -> pd.DataFrame:
    """Read DukeMTMC-reID.

    Layout::

        <root>/bounding_box_train/   16,522 training images  -> train
        <root>/query/                 2,228 query images      -> query
        <root>/bounding_box_test/    17,661 gallery images    -> gallery

    Names look like ``0001_c2_f0046182.jpg``: identity ``0001``, camera ``2``
    (of 8, stored 0-based), frame ``0046182``. The gallery's extra identities
    with no query are kept as they are (distractors for the protocol).
    ``root`` may also be the folder that contains ``DukeMTMC-reID/``.
    """
    return read_market_layout("dukemtmc", root, LAYOUT, subdirs=("DukeMTMC-reID", "dukemtmc-reid"))


class DukeMTMC(DataSource):
    """DukeMTMC-reID in the Market-1501 layout.

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/dukemtmc``.
    """

    folder = "dukemtmc"

    def frame(self) -> pd.DataFrame:
        return read_dukemtmc(self.root)
